"""lookup('basisit_model'): the derived data that left the hostvars is exactly what they held.

The inventory plugin used to copy every host's firewall rule sets (inbound, outbound, forward),
the VPN hub's peers and the whole standard into its hostvars (up to 58 KB per host). Now the
roles ask the lookup for the rule sets and peers, base reads only the names of the outbound
rules, and basisit_standard keeps what roles read. The oracle below is the plugin's code before
that change, kept verbatim: for EVERY host of the shipped estate the new path yields the old
value, and the role templates that consume them render byte-identical output with the old and
the new variables (Ansible's Templar, the role defaults as Ansible loads them).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from conftest import ROOT

from basisit import derived, policy
from basisit.validate import load_estate

os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))

from ansible.errors import AnsibleLookupError
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import lookup_loader
from ansible.template import Templar, trust_as_template

lookup_loader.add_directory(str(ROOT / "plugins" / "lookup"))
INVENTORY = ROOT / "inventory"


def _plugin():
    return lookup_loader.get("basisit_model")


# --- the oracle: plugins/inventory/basisit.py before the change, verbatim ------------------------


def old_firewall_rules(flows, with_dst: bool) -> list[dict]:
    groups: dict[tuple, tuple[set, set]] = {}
    for f in flows:
        key = (f.rule, f.proto, str(f.dst) if with_dst else "")
        srcs, ports = groups.setdefault(key, (set(), set()))
        srcs.add(f.src)
        ports.add(f.port)
    out = []
    for (rule, proto, dst), (srcs, ports) in sorted(groups.items()):
        r = {"rule": rule, "proto": proto, "src": [str(n) for n in sorted(srcs)], "ports": sorted(ports)}
        if with_dst:
            r["dst"] = dst
        out.append(r)
    return out


def _old_forward_flows(estate, site) -> list:
    found = set(policy.transit(estate, site))
    if site.is_zentral:
        zentral_hosts = {h.name for h in site.hosts}
        for k in estate.kommunen.values():
            found |= {f for f in policy.flows(estate, k) if set(f.src_hosts) & zentral_hosts}
    return sorted(found)


def old_hostvars(estate) -> dict[str, dict]:
    """{host: {basisit_firewall_inbound, _outbound, [_forward], [basisit_vpn_peers]}} as the old
    plugin set them (a variable it did not set is absent)."""
    out: dict[str, dict] = {}
    site_flows = {site.slug: policy.flows(estate, site) for site in estate.sites}
    for site in estate.sites:
        for host in site.hosts:
            v = out.setdefault(host.name, {})
            inbound = [f for f in site_flows[site.slug] if host.name in f.dst_hosts]
            v["basisit_firewall_inbound"] = old_firewall_rules(inbound, with_dst=False)
            outbound = [f for f in site_flows[site.slug] if host.name in f.src_hosts]
            v["basisit_firewall_outbound"] = old_firewall_rules(outbound, with_dst=True)
            if {"gateway", "zentral_gateway"} & set(host.roles):
                v["basisit_firewall_forward"] = old_firewall_rules(_old_forward_flows(estate, site), True)
    vpn_peers = [  # with the Kommune's block since the tunnel carries everything (issue 12)
        {"kommune": k.slug, "address": str(k.vpn_address), "block": str(k.block), "gateway": gw.name}
        for k in estate.kommunen.values()
        if k.vpn_address is not None
        for gw in k.hosts_with_role("gateway")
    ]
    for hub in estate.zentral.hosts_with_role("vpn_hub"):
        out[hub.name]["basisit_vpn_peers"] = vpn_peers
    return out


# The role defaults that read the moved variables, as they were.
OLD_DEFAULTS = {
    "base_firewall_inbound": "{{ basisit_firewall_inbound }}",
    "base_journal_forward": (
        "{{ basisit_firewall_outbound | selectattr('rule', 'in', base_journal_log_rules) | list | length > 0 }}"
    ),
    "gateway_forward_flows": "{{ basisit_firewall_forward | default([]) }}",
    "vpn_hub_peers": "{{ basisit_vpn_peers | default([]) }}",
}


@pytest.fixture(scope="module")
def estate():
    return load_estate(INVENTORY)


@pytest.fixture(scope="module")
def old(estate):
    return old_hostvars(estate)


@pytest.fixture
def listing(planned_listing) -> dict:
    return planned_listing


def _lookup(name: str, host: str, **kw):
    return _plugin().run([name], variables={"basisit_inventory_dir": str(INVENTORY)}, host=host, **kw)


# --- every host: the same values ---------------------------------------------------------------


def test_every_host_gets_the_old_values_from_the_lookup(estate, old):
    assert len(old) == len(estate.hosts()) > 150
    routers = hubs = 0
    for host, v in old.items():
        assert _lookup("firewall_inbound", host) == [v["basisit_firewall_inbound"]], host
        assert _lookup("firewall_outbound", host) == [v["basisit_firewall_outbound"]], host
        # absent before = `| default([])` in the role = [] from the lookup
        assert _lookup("firewall_forward", host) == [v.get("basisit_firewall_forward", [])], host
        assert _lookup("vpn_peers", host) == [v.get("basisit_vpn_peers", [])], host
        # base needs a yes/no: "some outbound rule is one of R", for any R, from the rule names
        names = _lookup("firewall_outbound_rules", host)[0]
        assert names == sorted({r["rule"] for r in v["basisit_firewall_outbound"]}), host
        routers += "basisit_firewall_forward" in v
        hubs += "basisit_vpn_peers" in v
    assert routers == len(estate.kommunen) + 1 and hubs == 1
    assert len(old["zentral-gw"]["basisit_vpn_peers"]) == len(estate.kommunen)


def test_hostvars_no_longer_carry_the_rule_sets_and_are_small(listing, old):
    hv = listing["_meta"]["hostvars"]
    assert set(hv) == set(old)
    for host, v in hv.items():
        assert not {"basisit_firewall_inbound", "basisit_firewall_outbound", "basisit_firewall_forward"} & set(v)
        assert "basisit_vpn_peers" not in v
        assert v["basisit_firewall_outbound_rules"] == sorted(
            {r["rule"] for r in old[host]["basisit_firewall_outbound"]}
        )
        assert v["basisit_inventory_dir"] == str(INVENTORY)


def test_standard_keeps_every_part_a_role_reads(listing, estate):
    """Each `basisit_standard.<path>` a role names resolves to the same value as in the full standard."""
    full = estate.standard.model_dump(mode="json", by_alias=True)
    reduced = listing["_meta"]["hostvars"]["nalbach-dc1"]["basisit_standard"]
    paths = set()
    for f in (ROOT / "roles").rglob("*"):
        if f.is_file() and f.suffix in (".yml", ".j2"):
            paths |= set(re.findall(r"basisit_standard((?:\.[a-z_]+)+)", f.read_text(encoding="utf-8")))
    assert {".admins", ".services.ntp.servers", ".services.dns.forwarders"} <= paths
    for path in sorted(paths):
        a, b = full, reduced
        for part in path.strip(".").split("."):
            a, b = a[part], b[part]
        assert a == b, path
    assert "allow" not in reduced and "addressing" not in reduced


# --- the templates: byte-identical with the old and the new variables --------------------------


def _role_defaults(loader: DataLoader) -> dict:
    out: dict = {}
    for role in ("base", "gateway", "vpn_hub"):
        out.update(
            loader.load_from_file(str(ROOT / "roles" / role / "defaults" / "main.yml"), trusted_as_template=True)
        )
    return out


def _render(variables: dict, template: str) -> str:
    loader = DataLoader()
    text = trust_as_template((ROOT / "roles" / template).read_text(encoding="utf-8"))
    return Templar(loader=loader, variables=variables).template(text)


TEMPLATES = {
    "base/templates/nftables.conf.j2": lambda h: True,
    "base/templates/rsyslog-forward.conf.j2": lambda h: True,
    "gateway/templates/forward.nft.j2": lambda h: {"gateway", "zentral_gateway"} & set(h["basisit_roles"]),
    "vpn_hub/templates/wg-hub.conf.j2": lambda h: "vpn_hub" in h["basisit_roles"],
}


def test_role_templates_render_the_same_for_every_host(listing, estate, old, tmp_path):
    loader = DataLoader()
    defaults = _role_defaults(loader)
    secrets = tmp_path / "secrets"
    full_standard = estate.standard.model_dump(mode="json", by_alias=True)
    rendered = dict.fromkeys(TEMPLATES, 0)
    forwarding = 0
    for host, hv in listing["_meta"]["hostvars"].items():
        common = {
            **defaults,
            "inventory_hostname": host,
            "ansible_managed": "managed",
            "vpn_hub_secrets_dir": str(secrets),
            "__vpn_hub_key": {"private": "PRIVATE"},
        }
        new = {**common, **hv}
        before = {k: v for k, v in hv.items() if k not in ("basisit_firewall_outbound_rules", "basisit_inventory_dir")}
        before = {**common, **before, **old[host], "basisit_standard": full_standard}
        before.update({k: trust_as_template(v) for k, v in OLD_DEFAULTS.items()})
        for template, applies in TEMPLATES.items():
            if not applies(hv):
                continue
            a, b = _render(before, template), _render(new, template)
            assert a == b, f"{template} differs for {host}"
            rendered[template] += 1
            if template.endswith("rsyslog-forward.conf.j2"):
                forwarding += "omfwd" in b
        if "gateway" in hv["basisit_roles"]:
            rule = old[host]["basisit_firewall_forward"][0]
            assert f'comment "{rule["rule"]}"' in _render(new, "gateway/templates/forward.nft.j2")
    assert rendered["base/templates/nftables.conf.j2"] == len(old)
    assert rendered["gateway/templates/forward.nft.j2"] == len(estate.kommunen) + 1
    assert rendered["vpn_hub/templates/wg-hub.conf.j2"] == 1
    # both branches of the log forwarding were compared
    assert 0 < forwarding < len(old)
    hub = _render({**defaults, **listing["_meta"]["hostvars"]["zentral-gw"], "inventory_hostname": "zentral-gw",
                   "ansible_managed": "m", "vpn_hub_secrets_dir": str(secrets), "__vpn_hub_key": {"private": "P"}},
                  "vpn_hub/templates/wg-hub.conf.j2")  # fmt: skip
    assert hub.count("[Peer]") == len(estate.kommunen)


# --- the cache and bad input -------------------------------------------------------------------


def test_estate_loaded_once_and_again_after_an_edit(inv, monkeypatch):
    loads = []
    real = derived.load_estate
    monkeypatch.setattr(derived, "load_estate", lambda d: loads.append(d) or real(d))
    first = derived.value(inv, "firewall_forward", "nalbach-gw")
    assert derived.value(inv, "firewall_inbound", "nalbach-dc1") and derived.value(inv, "vpn_peers", "zentral-gw")
    assert len(loads) == 1
    # a Kommune file changes: read again (size and mtime are the key)
    path = inv / "kommunen" / "nalbach.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert derived.value(inv, "firewall_forward", "nalbach-gw") == first
    assert len(loads) == 2


def test_the_inventory_plugin_hands_its_estate_over(inv, monkeypatch):
    est = load_estate(inv)
    derived.remember(inv, est)
    monkeypatch.setattr(derived, "load_estate", lambda d: pytest.fail("loaded again"))
    assert derived.estate(inv)[1] is est


def test_bad_input_is_a_clear_lookup_error(inv, tmp_path):
    with pytest.raises(AnsibleLookupError, match=r"unknown value 'firewall_sideways'; known: firewall_forward"):
        _lookup("firewall_sideways", "nalbach-gw")
    with pytest.raises(AnsibleLookupError, match=r"host 'nalbach-gw9' is not in the inventory"):
        _lookup("firewall_forward", "nalbach-gw9")
    with pytest.raises(AnsibleLookupError, match="no inventory directory"):
        _plugin().run(["firewall_forward"], variables={}, host="nalbach-gw")
    # the job does not see the directory the inventory was read from (e.g. another checkout)
    gone = str(tmp_path / "elsewhere" / "inventory")
    with pytest.raises(AnsibleLookupError, match=r"elsewhere/inventory.*inventory directory not found"):
        _plugin().run(["firewall_forward"], variables={"basisit_inventory_dir": gone}, host="nalbach-gw")
    broken = tmp_path / "broken"
    shutil.copytree(inv, broken)
    (broken / "kommunen" / "nalbach.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(AnsibleLookupError, match=r"is invalid:\n.*nalbach\.yaml"):
        _plugin().run(["firewall_forward"], variables={"basisit_inventory_dir": str(broken)}, host="x")


def test_roles_read_the_rule_sets_through_the_lookup():
    """No role reads a hostvar the plugin no longer sets."""
    gone = re.compile(r"basisit_firewall_(inbound|outbound|forward)\b|basisit_vpn_peers")
    users = [
        str(f.relative_to(ROOT))
        for f in (ROOT / "roles").rglob("*")
        if f.is_file() and f.suffix in (".yml", ".j2", ".py") and gone.search(f.read_text(encoding="utf-8"))
    ]
    assert users == []
