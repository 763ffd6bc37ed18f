"""The reachability matrix, probed from real hosts: what must connect does, what must not times out.

Allowed flows come from basisit.policy (the standard's allow matrix resolved for the site); each
TCP flow (and DNS over UDP) is probed from one realised host of its source to every realised
destination. Forbidden flows are a sample chosen so that each crosses a filter: across zones
inside the Kommune (gateway forward policy), inside a zone (host firewall), and across Kommunen
(both directions); each is confirmed forbidden by basisit.policy before it is probed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from basisit import policy
from basisit.verify.suite import all_targets, connect, context, estate, tcp_probe, udp_dns_probe

PROBE_TIMEOUT = 2.0  # seconds; a forbidden flow must not answer within this
# Controls that cases generated at run time add to the function's own (for the coverage table).
DYNAMIC_CONTROLS = {
    "test_allowed_flow_connects": ["gs:NET.1.1.A21", "gs:NET.3.2.A6"],
    "test_forbidden_flow_times_out": [
        "gs:NET.1.1.A4",
        "gs:NET.1.1.A21",
        "gs:NET.3.2.A2",
        "gs:NET.3.2.A6",
        "gs:OPS.1.1.2.A16",
        "gs:SYS.1.1.A19",
    ],
}


@dataclass(frozen=True)
class Case:
    name: str  # the probing (source) host
    kommune: str  # the Kommune under check
    rule: str
    dst: str  # destination host
    address: str
    source: str  # the probing host's address inside the flow's source network
    proto: str
    port: int
    expect: str  # open | timeout


# Which role feature a flow needs before it can connect (by allow rule).
RULE_FEATURE = {
    "zentral-mgmt-ssh": "gateway/forward",
    "tunnel-repair-ssh": "gateway/forward",
    "operator-ssh": "base/firewall",
    "client-dns": "ad_dc",
    "client-kerberos": "ad_dc",
    "client-ldap": "ad_dc",
    "client-smb": "ad_dc",
    "client-rpc": "ad_dc",
    "client-ntp": "ad_dc",
    "client-fileserver": "file_server",
    **{f"server-{s}": "ad_dc" for s in ("dns", "kerberos", "ldap", "smb", "rpc", "ntp")},
    "server-backup": "backup_server",
    "server-log": "log_host",
    "gateway-log": "log_host",
    **{r: "log_host" for r in ("zentral-gateway-log", "zentral-mgmt-log", "zentral-backup-log")},
    "dc-replication": "ad_dc/join",
    "dc-replication-udp": "ad_dc/join",
    **{r: "package_proxy" for r in ("server-packages", "client-packages", "gateway-packages")},
    **{r: "package_proxy" for r in ("zentral-packages", "zentral-gateway-packages")},
}


# Features that cases generated at run time need (for the coverage table).
DYNAMIC_FEATURES = {
    "test_allowed_flow_connects": sorted(set(RULE_FEATURE.values())),
    "test_forbidden_flow_times_out": ["base/firewall", "gateway/forward"],
}


def _realised() -> dict:
    return {t.name: t for t in all_targets(include_helpers=True)}


def _model_hosts() -> dict:
    return {h.name: h for h in estate().hosts()}


def _pick_source(names: tuple[str, ...], realised: dict) -> str | None:
    hosts = _model_hosts()
    cands = [n for n in names if n in realised]
    plain = [n for n in cands if not ({"gateway", "zentral_gateway"} & set(hosts[n].roles))]
    return (plain or cands or [None])[0]


def allowed_cases() -> list:
    realised = _realised()
    out = []
    for slug in context()["kommunen"]:
        for f in policy.flows(estate(), slug):
            if f.proto == "udp" and f.port != 53:
                continue  # no generic UDP probe: NTP and Kerberos are checked by their services
            src = _pick_source(f.src_hosts, realised)
            if src is None:
                continue
            if slug == "zentral" and realised[src].kommune != "zentral":
                # a Kommune's flows into zentral (backup, logs) are that Kommune's flows too and are
                # checked with it: a Kommune that is down fails itself, not zentral.
                continue
            for dst in f.dst_hosts:
                if dst not in realised or dst == src:
                    continue
                if slug == "zentral" and realised[dst].kommune != "zentral":
                    # zentral's flows into a Kommune (operators' ssh to `any`) are that Kommune's
                    # flows too and are checked with it: a Kommune that is down fails itself, not zentral.
                    continue
                addr = str(f.dst.network_address) if f.dst.prefixlen == 32 else realised[dst].address
                source = next(str(a) for a in realised[src].addresses_ip if a in f.src)
                c = Case(src, slug, f.rule, dst, addr, source, f.proto, f.port, "open")
                ctl = ["gs:NET.1.1.A21", "gs:NET.3.2.A6"] if f.port == 22 else []
                out.append(
                    pytest.param(
                        c,
                        marks=[pytest.mark.feature(RULE_FEATURE.get(f.rule, f.rule)), pytest.mark.controls(*ctl)],
                        id=f"{f.rule}-{src}-{dst}-{f.proto}{f.port}",
                    )
                )
    return out


def forbidden_cases() -> list:
    realised = _realised()
    out = []
    selected = context()["kommunen"]
    for slug in selected:
        site = estate().site(slug)
        mine = [h for h in site.hosts if h.name in realised]
        servers = [h for h in mine if h.primary_zone == "server"]
        clients = [h for h in mine if h.primary_zone == "client"]
        gws = [h for h in mine if "gateway" in h.roles]
        pairs = []  # (src, dst, dst address, feature, controls[, source address])
        zone_ctl = ("gs:NET.3.2.A2",)
        if servers and clients:
            pairs.append((clients[0], servers[0], servers[0].address, "gateway/forward", (*zone_ctl, "gs:NET.3.2.A6")))
            pairs.append((servers[0], clients[0], clients[0].address, "gateway/forward", zone_ctl))
        if clients and gws:
            gw = gws[0]
            pairs.append((clients[0], gw, gw.addresses["client"], "base/firewall", ("gs:SYS.1.1.A19", "gs:NET.3.2.A6")))
        if len(servers) >= 2:
            pairs.append(
                (servers[0], servers[1], servers[1].address, "base/firewall", ("gs:SYS.1.1.A19", "gs:NET.3.2.A6"))
            )
        # Across Kommunen, both directions: this Kommune's first server and another realised Kommune's.
        others = [
            h
            for s in estate().kommunen.values()
            if s.slug != slug
            for h in s.hosts
            if h.name in realised and h.primary_zone == "server"
        ]
        if servers and others:
            k_ctl = ("gs:NET.1.1.A4",)
            pairs.append((servers[0], others[0], others[0].address, "gateway/forward", k_ctl))
            pairs.append((others[0], servers[0], servers[0].address, "gateway/forward", k_ctl))
        # SSH only from zentral's management host: not from the gateways in the management zones
        # (zentral's, which routes every Kommune, and the Kommune's own), from any of their addresses.
        ssh_ctl = ("gs:OPS.1.1.2.A16", "gs:NET.1.1.A21")
        zgw = next((h for h in estate().zentral.hosts if "zentral_gateway" in h.roles and h.name in realised), None)
        if slug == "zentral":
            dsts = [h for h in mine if not {"zentral_gateway", "mgmt_host"} & set(h.roles)][:1]
            pairs += [(zgw, d, d.address, "base/firewall", ssh_ctl, zgw.address) for d in dsts if zgw]
        else:
            target = (servers or [h for h in mine if "gateway" not in h.roles] or [None])[0]
            if target and zgw:
                pairs += [(zgw, target, target.address, "gateway/forward", ssh_ctl, a) for a in zgw.addresses.values()]
            if target and gws:
                mgmt_addr = gws[0].addresses.get("management")
                if mgmt_addr:
                    pairs.append((gws[0], target, target.address, "base/firewall", ssh_ctl, mgmt_addr))
        for src, dst, addr, feature, ctl, *source in pairs:
            source = source[0] if source else src.address
            src_site = estate().site(src.site)
            if policy.allowed(estate(), src_site, source, addr, "tcp", 22) or policy.allowed(
                estate(), estate().site(dst.site), source, addr, "tcp", 22
            ):
                continue  # the matrix allows it after all: not a forbidden sample
            c = Case(src.name, slug, "forbidden", dst.name, str(addr), str(source), "tcp", 22, "timeout")
            out.append(
                pytest.param(
                    c,
                    marks=[pytest.mark.feature(feature), pytest.mark.controls(*ctl)],
                    id=f"{src.name}-{dst.name}-tcp22" + (f"-from-{source}" if source != src.address else ""),
                )
            )
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "allowed" in metafunc.fixturenames:
        metafunc.parametrize("allowed", allowed_cases())
    if "forbidden" in metafunc.fixturenames:
        metafunc.parametrize("forbidden", forbidden_cases())


def _probe(c: Case) -> str:
    h = connect(c.name)
    if c.proto == "udp" and c.port == 53:
        return udp_dns_probe(h, c.address, timeout=PROBE_TIMEOUT, source=c.source)
    return tcp_probe(h, c.address, c.port, PROBE_TIMEOUT, source=c.source)


@pytest.mark.controls("wiba:Netze", "gs:NET.1.1.A5")
def test_allowed_flow_connects(allowed: Case):
    got = _probe(allowed)
    assert got in ("open", "answer"), (
        f"{allowed.rule}: {allowed.name} -> {allowed.dst} ({allowed.address}) {allowed.proto}/{allowed.port}: {got}"
    )


@pytest.mark.controls("wiba:Netze", "gs:NET.1.1.A5")
def test_forbidden_flow_times_out(forbidden: Case):
    got = _probe(forbidden)
    assert got == "timeout", f"{forbidden.name} -> {forbidden.dst} ({forbidden.address}) tcp/22 is not dropped: {got}"
