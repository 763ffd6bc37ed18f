"""gateway role: the site router (roles/gateway): forward policy, resolver, DHCP, NTP."""

from __future__ import annotations

import difflib
import json
import re

import pytest

from basisit import policy
from basisit.verify.suite import estate

pytestmark = pytest.mark.role("gateway")


@pytest.fixture(scope="module")
def ruleset(host) -> list[dict]:
    return json.loads(host.check_output("nft -j list ruleset"))["nftables"]


def _chains(ruleset: list[dict], hook: str) -> list[dict]:
    return [e["chain"] for e in ruleset if "chain" in e and e["chain"].get("hook") == hook]


def _rules(ruleset: list[dict], chain: str) -> list[dict]:
    return [e["rule"] for e in ruleset if "rule" in e and e["rule"]["chain"] == chain]


@pytest.mark.feature("gateway/forward")
@pytest.mark.controls("gs:NET.1.1.A5", "gs:NET.3.2.A2", "gs:NET.3.2.A3", "wiba:Netze")
def test_forward_default_deny(ruleset):
    chains = _chains(ruleset, "forward")
    assert chains, "no forward base chain"
    assert all(c.get("policy") == "drop" for c in chains), [(c["name"], c.get("policy")) for c in chains]


@pytest.mark.feature("gateway/forward")
@pytest.mark.controls("gs:NET.3.2.A9", "gs:NET.1.1.A5")
def test_forward_drops_counted(ruleset):
    """The last forward rule counts what the matrix does not allow, then drops it."""
    (chain,) = [c for c in _chains(ruleset, "forward") if c["name"] == "forward"]  # not underlay_forward
    last = _rules(ruleset, chain["name"])[-1]["expr"]
    assert {"counter"} <= {next(iter(e)) for e in last} and any("drop" in e for e in last), last


@pytest.mark.feature("gateway/forward")
@pytest.mark.controls("gs:NET.1.1.A15", "gs:NET.3.2.A2", "gs:NET.3.2.A4")
def test_forward_rules_match_allow_matrix(target, ruleset):
    """Soll-Ist: the forward accept rules are exactly the matrix's transit flows (plus the operator SSH path)."""
    (chain,) = [c for c in _chains(ruleset, "forward") if c["name"] == "forward"]  # not underlay_forward
    comments = {r.get("comment") for r in _rules(ruleset, chain["name"]) if any("accept" in e for e in r["expr"])}
    want = {f.rule for f in policy.transit(estate(), estate().site(target.kommune))}
    extra = comments - want - {"ssh-extra", None}
    assert not extra, f"forward accepts flows outside the allow matrix: {sorted(extra)}"
    assert want <= comments, f"allow-matrix flows without a forward rule: {sorted(want - comments)}"


def _chain_listing(text: str) -> tuple[str, list[tuple[str, str]]]:
    """An `nft [-a] list chain` listing: its hook line, and its rules in order, each as (the rule
    as compared: counters without their values, no handle; the rule as listed)."""
    hook, rules = "", []
    for line in text.splitlines():
        s = line.strip()
        if not s or s == "}" or s.startswith(("table ", "chain ")):
            continue
        if s.startswith("type "):
            hook = s
            continue
        norm = re.sub(r"\s*# handle \d+$", "", re.sub(r"counter packets \d+ bytes \d+", "counter", s))
        rules.append((norm, s))
    return hook, rules


def chain_differences(rendered: str, live: str) -> tuple[list[str], list[str]]:
    """Rule by rule: the live rules that are not in the rendered chain (with their position and
    handle) and the rendered rules missing from the live chain (a changed hook line is both)."""
    want_hook, want = _chain_listing(rendered)
    have_hook, have = _chain_listing(live)
    extra, missing = [], []
    if want_hook != have_hook:
        extra.append(f"chain: {have_hook}")
        missing.append(f"chain: {want_hook}")
    sm = difflib.SequenceMatcher(a=[w for w, _ in want], b=[h for h, _ in have], autojunk=False)
    for op, a0, a1, b0, b1 in sm.get_opcodes():
        if op in ("replace", "insert"):
            extra += [f"rule {i + 1}: {have[i][1]}" for i in range(b0, b1)]
        if op in ("replace", "delete"):
            missing += [f"rule {i + 1}: {want[i][1]}" for i in range(a0, a1)]
    return extra, missing


@pytest.mark.feature("gateway/forward")
@pytest.mark.controls("gs:NET.1.1.A15", "gs:NET.3.2.A4", "gs:NET.3.2.A2")
def test_forward_chain_is_the_rendered_one(host):
    """Rule by rule, the live forward chain is the one the files on the host make (loaded into an
    empty network namespace, as at boot): a rule added by hand anywhere in it is named."""
    rendered = host.run("unshare --net sh -c 'nft -f /etc/nftables.conf && nft list chain inet basisit forward'")
    assert rendered.rc == 0, f"the rendered files do not load: {rendered.stderr.strip()[-300:]}"
    extra, missing = chain_differences(rendered.stdout, host.check_output("nft -a list chain inet basisit forward"))
    assert not extra, f"forward rules that are not in the rendered chain: {'; '.join(extra)}"
    assert not missing, f"rendered forward rules missing from the live chain: {'; '.join(missing)}"


@pytest.mark.feature("gateway/forward")
@pytest.mark.controls("gs:NET.1.1.A5")
def test_routing_enabled(host):
    assert host.check_output("sysctl -n net.ipv4.ip_forward") == "1"


@pytest.mark.feature("gateway/dns")
@pytest.mark.controls("gs:SYS.1.1.A6", "wiba:Netze")
def test_resolver_running(host):
    assert host.service("unbound").is_running
    assert host.run("unbound-checkconf").rc == 0


@pytest.mark.feature("gateway/dns")
@pytest.mark.controls("gs:APP.2.2.A10", "wiba:Netze")
def test_resolver_forwards_ad_zone_to_dcs(host, target):
    """The AD zone (and its reverse zones) go to the site's DCs, nowhere else."""
    site = estate().site(target.kommune)
    conf = host.check_output("cat /etc/unbound/unbound.conf.d/basisit.conf")
    assert f'name: "{site.domain}"' in conf, f"no forward zone for {site.domain}"
    zone = conf.split(f'name: "{site.domain}"', 1)[1].split("forward-zone:", 1)[0]
    forwarders = {ln.split(":", 1)[1].strip() for ln in zone.splitlines() if ln.strip().startswith("forward-addr:")}
    assert forwarders == {str(h.address) for h in site.hosts_with_role("ad_dc")}, forwarders


@pytest.mark.feature("gateway/dhcp")
@pytest.mark.controls("gs:NET.1.1.A6", "wiba:Netze")
def test_dhcp_reservations_match_assets(host, target):
    """Kea's configuration parses and reserves every endpoint's model address."""
    assert host.service("kea-dhcp4-server").is_running
    assert host.run("kea-dhcp4 -t /etc/kea/kea-dhcp4.conf").rc == 0
    conf = json.loads(host.check_output("cat /etc/kea/kea-dhcp4.conf"))
    reserved = {r["ip-address"] for s in conf["Dhcp4"]["subnet4"] for r in s.get("reservations", [])}
    site = estate().site(target.kommune)
    want = {str(h.address) for h in site.hosts_with_role("endpoint")}
    assert want == reserved, f"reservations {sorted(reserved)}; the model's endpoints are {sorted(want)}"


@pytest.mark.feature("gateway/ntp")
@pytest.mark.controls("gs:OPS.1.1.5.A4", "gs:NET.3.2.A22")
def test_ntp_served_to_site_zones(host, target):
    """chrony on the gateway serves the site's internal zones (allow lines), not the transfer network."""
    conf = host.check_output("cat /etc/chrony/chrony.conf /etc/chrony/conf.d/*.conf 2>/dev/null || true")
    site = estate().site(target.kommune)
    for name, zone in site.zones.items():
        line = f"allow {zone.network}"
        if name == "transfer":
            assert line not in conf, "NTP served to the transfer network"
        else:
            assert line in conf, f"NTP not served to the {name} zone ({zone.network})"
