"""basisit.policy: the allow matrix resolved into concrete flows."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
import yaml

from basisit import policy
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
ESTATE = load_estate(ROOT / "inventory")
N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def by_rule(flows: list[policy.Flow], rule: str) -> list[policy.Flow]:
    return [f for f in flows if f.rule == rule]


def test_client_dns_resolves_to_the_dc_only():
    site = ESTATE.site("bexbach")
    dc = site.host("dc1")
    dns = by_rule(policy.flows(ESTATE, site), "client-dns")
    assert {(f.proto, f.port) for f in dns} == {("udp", 53), ("tcp", 53)}
    for f in dns:
        assert f.src == site.zones["client"].network
        assert f.dst == N(f"{dc.address}/32")
        assert f.dst_hosts == (dc.name,)


def test_large_kommune_reaches_both_dcs():
    site = next(s for s in ESTATE.kommunen.values() if s.size == "L")
    ldap = by_rule(policy.flows(ESTATE, site), "client-ldap")
    assert {f.dst_hosts for f in ldap} == {(h.name,) for h in site.hosts_with_role("ad_dc")}
    assert len(site.hosts_with_role("ad_dc")) == 2


def test_small_kommune_has_no_fileserver_flows():
    site = next(s for s in ESTATE.kommunen.values() if s.size == "S")
    assert by_rule(policy.flows(ESTATE, site), "client-fileserver") == []


@pytest.mark.parametrize("slug", ["zentral", *ESTATE.kommunen])
def test_nothing_resolves_to_the_world_or_another_kommune(slug):
    site = ESTATE.site(slug)
    flows = policy.flows(ESTATE, site)
    assert flows
    zentral_nets = policy.site_networks(ESTATE.zentral)
    for f in flows:
        assert f.src.prefixlen > 0 and f.dst.prefixlen > 0, f.label
        if site.is_zentral:
            # zentral's flows start or end in zentral; a Kommune network only on the other side
            assert any(f.dst.subnet_of(n) or f.src.subnet_of(n) for n in zentral_nets), f.label
            continue
        for net in (f.src, f.dst):
            assert not policy.foreign(ESTATE, site, net), f.label
            assert net.subnet_of(site.block) or any(net.subnet_of(n) for n in zentral_nets), f.label


@pytest.mark.parametrize("slug", list(ESTATE.kommunen))
def test_every_rule_resolves_where_its_target_exists(slug):
    site = ESTATE.site(slug)
    rules = {f.rule for f in policy.flows(ESTATE, site)}
    for rule in ESTATE.standard.allow:
        target = rule.to.removeprefix(policy.ZENTRAL_PREFIX)
        if rule.src.startswith(policy.ZENTRAL_PREFIX) and rule.to.startswith(policy.ZENTRAL_PREFIX):
            continue  # zentral-internal (operator-ssh): see test_zentral_flows_collect_every_kommune
        if rule.src == rule.to and len(site.hosts_with_role(target)) < 2:
            continue  # among the hosts of one role (DC replication): nothing with a single host
        if rule.to.startswith(policy.ZENTRAL_PREFIX) or rule.to == policy.ANY or site.hosts_with_role(target):
            assert rule.name in rules, f"{slug}: {rule.name} resolved to nothing"


def test_the_two_dcs_of_a_size_l_kommune_replicate_both_ways_on_the_role_s_rpc_port():
    site = next(s for s in ESTATE.kommunen.values() if s.size == "L")
    dc1, dc2 = site.hosts_with_role("ad_dc")
    tcp = by_rule(policy.flows(ESTATE, site), "dc-replication")
    assert {(f.src_hosts, f.dst_hosts) for f in tcp} == {((dc1.name,), (dc2.name,)), ((dc2.name,), (dc1.name,))}
    defaults = yaml.safe_load((ROOT / "roles" / "ad_dc" / "defaults" / "main.yml").read_text())
    rpc = defaults["ad_dc_rpc_port"]
    assert {rpc, rpc + 1} <= {f.port for f in tcp}  # DRS/DNS management and NETLOGON
    small = next(s for s in ESTATE.kommunen.values() if s.size == "S")
    assert not by_rule(policy.flows(ESTATE, small), "dc-replication")  # one DC: no rule to itself


def test_zentral_mgmt_reaches_every_host_of_a_kommune_by_ssh():
    site = ESTATE.site("tholey")
    ssh = by_rule(policy.flows(ESTATE, site), "zentral-mgmt-ssh")
    mgmt = ESTATE.zentral.host("mgmt")
    assert {f.src for f in ssh} == {N(f"{mgmt.address}/32")}  # zentral:mgmt_host, never a whole zone
    assert {h for f in ssh for h in f.dst_hosts} == {h.name for h in site.hosts}
    assert all((f.proto, f.port) == ("tcp", 22) for f in ssh)


def test_destination_address_is_the_one_in_the_source_zone():
    site = ESTATE.site("bexbach")
    gw = site.host("gw")
    assert policy._dst_address(gw, "management") == gw.addresses["management"]
    assert policy._dst_address(gw, "client") == gw.addresses["client"]
    assert policy._dst_address(gw, None) == gw.address


def test_ssh_only_from_the_management_host():
    """No zone, no gateway reaches a host's SSH: only zentral's management host (issue 12, item 6)."""
    mgmt = ESTATE.zentral.host("mgmt")
    for slug in ("bexbach", "nalbach", "zentral"):
        ssh = [f for f in policy.flows(ESTATE, slug) if (f.proto, f.port) == ("tcp", 22)]
        into_site = [f for f in ssh if f.rule != "operator-ssh"]
        assert into_site and {f.src for f in into_site} == {N(f"{mgmt.address}/32")}, slug
    operators = by_rule(policy.flows(ESTATE, "zentral"), "operator-ssh")
    assert {f.dst_hosts for f in operators} == {(mgmt.name,)}  # operators reach the management host only
    zgw = ESTATE.zentral.host("gw")
    site = ESTATE.site("nalbach")
    for src in zgw.addresses.values():
        for h in site.hosts:
            assert policy.allowed(ESTATE, site, src, h.address, "tcp", 22) is None, (src, h.name)
    gw = site.host("gw")
    assert policy.allowed(ESTATE, site, gw.addresses["management"], site.host("dc1").address, "tcp", 22) is None


def test_zentral_flows_collect_every_kommune():
    flows = policy.flows(ESTATE, "zentral")
    backup = by_rule(flows, "server-backup")
    assert {f.site for f in backup} == set(ESTATE.kommunen)
    assert {f.src for f in backup} == {s.zones["server"].network for s in ESTATE.kommunen.values()}
    assert {f.dst_hosts for f in backup} == {("zentral-backup",)}
    # the operators' management zone reaches zentral's own hosts too
    own = by_rule([f for f in flows if f.site == "zentral"], "zentral-mgmt-ssh")
    assert {f.dst_hosts[0] for f in own} == {h.name for h in ESTATE.zentral.hosts} - {"zentral-mgmt"}
    operators = by_rule([f for f in flows if f.site == "zentral"], "operator-ssh")
    assert {f.src for f in operators} == {ESTATE.zentral.zones["management"].network}


def test_a_multi_homed_zentral_source_connects_from_its_address_in_the_destination_zone():
    """zentral's gateway has an address in every zone: to the log host (services) it connects from
    its services address, as the kernel picks it; to the package proxy (management) from its
    management one. Single-homed sources keep their one address."""
    z = ESTATE.zentral
    gw, mgmt, log = z.host("gw"), z.host("mgmt"), z.host("log")
    flows = [f for f in policy.flows(ESTATE, "zentral") if f.site == "zentral"]
    (to_log,) = by_rule(flows, "zentral-gateway-log")
    assert (
        to_log.src
        == ipaddress.IPv4Network(f"{gw.addresses['services']}/32")
        != ipaddress.IPv4Network(f"{gw.address}/32")
    )
    assert (to_log.dst, to_log.proto, to_log.port) == (ipaddress.IPv4Network(f"{log.address}/32"), "tcp", 514)
    (to_proxy,) = by_rule(flows, "zentral-gateway-packages")
    assert to_proxy.src == ipaddress.IPv4Network(f"{gw.addresses['management']}/32")
    (mgmt_log,) = by_rule(flows, "zentral-mgmt-log")
    assert mgmt_log.src == ipaddress.IPv4Network(f"{mgmt.address}/32")
    # the log host keeps its own logs: no rule from it to itself
    assert not [f for f in policy.outbound(ESTATE, log) if f.rule in policy.log_rules(ESTATE)]


def test_zentral_flows_include_what_leaves_zentral():
    flows = policy.flows(ESTATE, "zentral")
    out = [f for f in flows if f.rule == "zentral-mgmt-ssh" and f.site == "bexbach"]
    assert {h for f in out for h in f.dst_hosts} == {h.name for h in ESTATE.site("bexbach").hosts}
    mgmt = ESTATE.zentral.host("mgmt")
    assert {f.site for f in policy.outbound(ESTATE, mgmt) if f.rule == "zentral-mgmt-ssh"} >= set(ESTATE.kommunen)
    assert policy.inbound(ESTATE, mgmt)  # SSH from its own zone's operators; from a Kommune only apt
    from_kommunen = [f for f in policy.inbound(ESTATE, mgmt) if f.site != "zentral"]
    assert {(f.rule, f.proto, f.port) for f in from_kommunen} == {
        (r, "tcp", 3142) for r in ("server-packages", "client-packages", "gateway-packages")
    }  # the package proxy (it runs on the management host), nothing else


def test_inbound_and_outbound():
    site = ESTATE.site("bexbach")
    dc, fs = site.host("dc1"), site.host("fs1")
    dc_in = {f.rule for f in policy.inbound(ESTATE, dc)}
    assert {"client-dns", "client-kerberos", "client-ldap", "zentral-mgmt-ssh"} <= dc_in
    assert "mgmt-ssh" not in dc_in
    fs_in = {(f.proto, f.port) for f in policy.inbound(ESTATE, fs)}
    assert fs_in == {("tcp", 445), ("tcp", 22)}
    out = {f.rule for f in policy.outbound(ESTATE, dc)}
    assert {"server-backup", "server-log"} <= out
    backup_host = ESTATE.zentral.host("backup")
    assert {f.site for f in policy.inbound(ESTATE, backup_host) if f.rule == "server-backup"} == set(ESTATE.kommunen)


def test_transit_is_what_the_gateway_forwards():
    site = ESTATE.site("bexbach")
    rules = {(f.rule, f.dst_hosts) for f in policy.transit(ESTATE, site)}
    assert ("client-dns", ("bexbach-dc1",)) in rules
    assert ("server-backup", ("zentral-backup",)) in rules
    assert ("zentral-mgmt-ssh", ("bexbach-dc1",)) in rules  # from zentral's management host


def test_allowed():
    site = ESTATE.site("bexbach")
    client = site.zones["client"].network.network_address + 150
    dc = site.host("dc1").address
    fs = site.host("fs1").address
    assert policy.allowed(ESTATE, site, client, dc, "udp", 53).rule == "client-dns"
    assert policy.allowed(ESTATE, site, client, dc, "tcp", 22) is None
    assert policy.allowed(ESTATE, site, client, fs, "tcp", 53) is None
    other_client = ESTATE.site("mettlach").zones["client"].network.network_address + 150
    assert policy.allowed(ESTATE, site, other_client, dc, "udp", 53) is None
    assert policy.allowed(ESTATE, site, A("0.0.0.0"), dc, "tcp", 22) is None


def test_unknown_name_in_a_rule_is_an_error():
    rules = list(ESTATE.standard.allow)
    bad = rules[0].model_copy(update={"to": "mainframe"})
    estate = dataclasses.replace(ESTATE, standard=ESTATE.standard.model_copy(update={"allow": [*rules, bad]}))
    with pytest.raises(policy.PolicyError, match="mainframe"):
        policy.flows(estate, "bexbach")
    bad_z = rules[0].model_copy(update={"to": "zentral:mainframe"})
    estate = dataclasses.replace(ESTATE, standard=ESTATE.standard.model_copy(update={"allow": [bad_z]}))
    with pytest.raises(policy.PolicyError, match="mainframe"):
        policy.flows(estate, "bexbach")


def test_flows_are_sorted_and_unique():
    flows = policy.flows(ESTATE, "homburg")
    assert flows == sorted(set(flows))
    assert policy.flows(ESTATE, "homburg") == flows  # memo returns an equal, independent list
    flows.clear()
    assert policy.flows(ESTATE, "homburg")
