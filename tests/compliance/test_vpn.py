"""The WireGuard tunnel from every site gateway to the zentral hub (roles gateway/vpn, vpn_hub),
and that everything between a site and zentral travels inside it (gateway/underlay).

Read from the running interfaces (`wg show <if> endpoints|allowed-ips|latest-handshakes`, never
`dump` or `private-key`: verify reads no private key), and proven by traffic: the gateway pings
the hub's tunnel address through the tunnel. The routes (`ip route get`) of every site<->zentral
flow lead into the tunnel on both routers, and the live nftables chains of the transfer link
(`nft -j list ruleset`) admit only the allow rules marked `underlay` (basisit.policy).
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from basisit import policy
from basisit.verify import nftjson
from basisit.verify.suite import connect, context, estate, not_applicable, role_default

pytestmark = pytest.mark.role("gateway")

IFACE = role_default("gateway", "gateway_vpn_interface")
HANDSHAKE_MAX_AGE = 300  # s; with a 25 s keepalive WireGuard renews the session every 2 minutes
CONTROLS = ("gs:NET.1.1.A4", "wiba:Netze")  # zones joined only through the encrypted tunnel
# Service traffic between sites only encrypted, the transfer link carries the tunnel alone.
UNDERLAY_CONTROLS = ("gs:NET.3.3.A4", "gs:CON.1.A1", "gs:NET.1.1.A4", "wiba:Netze")
UNDERLAY_HOOKS = ("input", "output", "forward")


def _wg(h, what: str) -> dict[str, str]:
    """`wg show IFACE <what>`: {peer public key: value}. Never `dump`: it prints the private key."""
    out = h.run("wg show %s %s", IFACE, what)
    assert out.rc == 0, f"no WireGuard interface {IFACE}: {out.stderr.strip()}"
    return dict(line.split("\t", 1) for line in out.stdout.splitlines() if "\t" in line)


def peers(h) -> dict[str, dict]:
    """{public key: {endpoint, allowed_ips, handshake_age}} of IFACE's peers (age None: never)."""
    endpoints, allowed = _wg(h, "endpoints"), _wg(h, "allowed-ips")
    now = time.time()
    return {
        pub: {
            "endpoint": endpoints.get(pub, "(none)"),
            "allowed_ips": set(allowed.get(pub, "").replace(",", " ").split()) - {"(none)"},
            "handshake_age": now - int(hs) if int(hs) else None,
        }
        for pub, hs in _wg(h, "latest-handshakes").items()
    }


def hub():
    h = estate().zentral.hosts_with_role("vpn_hub")[0]
    return h, connect(h.name)


@pytest.mark.feature("gateway/vpn")
@pytest.mark.controls(*CONTROLS)
def test_tunnel_to_hub_is_up(host, target):
    _, hub_conn = hub()
    hub_key = hub_conn.check_output("wg show %s public-key", IFACE).strip()
    mine = peers(host)
    assert list(mine) == [hub_key], f"{target.name}: peers {list(mine)}; expected only the hub {hub_key}"
    p = mine[hub_key]
    want = set(policy.vpn_networks(estate(), _model_host(target.name)))
    assert p["allowed_ips"] == want, f"{target.name}: the hub peer's AllowedIPs {p['allowed_ips']}; expected {want}"
    assert p["handshake_age"] is not None, f"{target.name}: no handshake with the hub ever"
    assert p["handshake_age"] <= HANDSHAKE_MAX_AGE, f"last handshake {p['handshake_age']:.0f} s ago"


@pytest.mark.feature("gateway/vpn")
@pytest.mark.controls(*CONTROLS)
def test_hub_answers_through_the_tunnel(host):
    hub_host, _ = hub()
    out = host.run("ping -c 1 -W 3 -I %s %s", IFACE, str(hub_host.addresses["vpn"]))
    assert out.rc == 0, f"no answer from the hub's tunnel address: {out.stdout.strip()[-200:]}"


@pytest.mark.feature("gateway/vpn")
@pytest.mark.controls(*CONTROLS)
def test_tunnel_key_is_private(host):
    f = host.file(f"/etc/wireguard/{IFACE}.conf")
    assert f.exists and f.user == "root" and f.mode == 0o600, f"{f.path}: {f.user} {oct(f.mode) if f.exists else '-'}"


@pytest.mark.role("vpn_hub")
@pytest.mark.feature("vpn_hub/tunnel")
@pytest.mark.controls(*CONTROLS)
def test_hub_has_a_live_peer_per_checked_kommune(host):
    kommunen = [k for k in context()["kommunen"] if k in estate().kommunen]
    if not kommunen:
        not_applicable("no Kommune in this run")
    by_address = {a: p for p in peers(host).values() for a in p["allowed_ips"]}
    for slug in kommunen:
        k = estate().kommunen[slug]
        want = f"{k.vpn_address}/32"
        assert want in by_address, f"the hub has no peer for {slug} ({want})"
        assert by_address.get(str(k.block)) is by_address[want], (
            f"the hub's peer {want} does not carry {slug}'s block {k.block}"
        )
        age = by_address[want]["handshake_age"]
        assert age is not None and age <= HANDSHAKE_MAX_AGE, f"{slug}: last handshake {age} s ago"


def _model_host(name: str):
    return next(h for h in estate().hosts() if h.name == name)


def _route_dev(h, address: str) -> str:
    out = h.run("ip -j -4 route get %s", address)
    assert out.rc == 0, f"ip route get {address}: {out.stderr.strip()}"
    return json.loads(out.stdout)[0].get("dev", "(none)")


def _tunnel_ends(slug: str, side: str) -> dict[str, set[str]]:
    """The addresses at `side` (`zentral` or `kommune`) of the Kommune's flows that must travel
    inside the tunnel, with the allow rules that need each."""
    k = estate().kommunen[slug]
    out: dict[str, set[str]] = {}
    for f in policy.tunnel_flows(estate(), k):
        for net in (f.src, f.dst):
            if net.subnet_of(k.block) == (side == "kommune"):
                addrs = [net.network_address] if net.prefixlen == 32 else _hosts_in(net, f)
                for a in addrs:
                    out.setdefault(str(a), set()).add(f.rule)
    return out


def _hosts_in(net: ipaddress.IPv4Network, f: policy.Flow) -> list[ipaddress.IPv4Address]:
    names = set(f.src_hosts) | set(f.dst_hosts)
    return [a for h in estate().hosts() if h.name in names for a in h.addresses.values() if a in net]


@pytest.mark.feature("gateway/vpn")
@pytest.mark.controls(*UNDERLAY_CONTROLS)
def test_zentral_flows_route_into_the_tunnel(host, target):
    """Backup, logs and management SSH between the site and zentral leave the gateway through the
    tunnel: `ip route get` of every zentral end of the Kommune's site<->zentral flows names it."""
    wrong = {
        a: (dev, sorted(rules))
        for a, rules in sorted(_tunnel_ends(target.kommune, "zentral").items())
        if (dev := _route_dev(host, a)) != IFACE
    }
    assert not wrong, f"{target.name}: zentral addresses routed outside the tunnel {IFACE}: " + "; ".join(
        f"{a} ({', '.join(r)}) via {dev}" for a, (dev, r) in wrong.items()
    )


@pytest.mark.role("vpn_hub")
@pytest.mark.feature("vpn_hub/routes")
@pytest.mark.controls(*UNDERLAY_CONTROLS)
def test_hub_routes_each_checked_kommune_into_its_tunnel(host, target):
    """zentral reaches a Kommune's hosts through the tunnel: the hub routes the Kommune's end of
    every site<->zentral flow into it (while the peer's handshake is live)."""
    kommunen = [k for k in context()["kommunen"] if k in estate().kommunen]
    if not kommunen:
        not_applicable("no Kommune in this run")
    wrong = []
    for slug in kommunen:
        for a, rules in sorted(_tunnel_ends(slug, "kommune").items()):
            if (dev := _route_dev(host, a)) != IFACE:
                wrong.append(f"{slug} {a} ({', '.join(sorted(rules))}) via {dev}")
    assert not wrong, f"{target.name}: Kommune addresses routed outside the tunnel {IFACE}: " + "; ".join(wrong)


def _match(expr: list[dict]) -> dict:
    """The parts of an underlay rule: {saddr, daddr (networks), proto, port_side, ports, ifnames}."""
    got: dict = {}
    for e in expr:
        m = e.get("match")
        if not m:
            continue
        left, right = m.get("left", {}), m.get("right")
        if "payload" in left:
            pl = left["payload"]
            if pl.get("protocol") == "ip" and pl.get("field") in ("saddr", "daddr"):
                got[pl["field"]] = nftjson.collapse(nftjson._addresses(right) or [])
            elif pl.get("protocol") in ("tcp", "udp"):
                got["proto"], got["port_side"] = pl["protocol"], pl.get("field")
                vals = right["set"] if isinstance(right, dict) and "set" in right else [right]
                got["ports"] = sorted(int(v) for v in vals)
            else:
                got["other"] = pl
        elif "meta" in left and left["meta"].get("key") in ("iifname", "oifname"):
            vals = right["set"] if isinstance(right, dict) and "set" in right else [right]
            got.setdefault("ifnames", set()).update(vals)
    return got


def _transfer_ifaces(h) -> set[str]:
    """The host's interfaces with an address in a Kommune's transfer zone (the underlay)."""
    nets = [k.zones["transfer"].network for k in estate().kommunen.values()]
    out = set()
    for link in json.loads(h.check_output("ip -j -4 addr show")):
        for a in link.get("addr_info", []):
            if any(ipaddress.IPv4Address(a["local"]) in n for n in nets):
                out.add(link["ifname"])
    return out


def _check_underlay(host, name: str) -> None:
    model_host = _model_host(name)
    want_rules = policy.underlay_rules(estate(), model_host)
    ruleset = json.loads(host.check_output("nft -j list ruleset"))["nftables"]
    chains = {e["chain"]["name"]: e["chain"] for e in ruleset if "chain" in e and e["chain"]["table"] == "basisit"}
    transfer = _transfer_ifaces(host)
    assert transfer, f"{name}: no interface with a transfer-zone address"
    problems = []
    for hook in UNDERLAY_HOOKS:
        cname = f"underlay_{hook}"
        c = chains.get(cname)
        if c is None or c.get("hook") != hook:
            problems.append(f"no base chain {cname} on the {hook} hook")
            continue
        if not (c.get("prio", 0) < 0 and c.get("policy") == "drop"):
            problems.append(f"{cname}: priority {c.get('prio')} policy {c.get('policy')} (must run first and drop)")
        rules = [
            e["rule"]
            for e in ruleset
            if "rule" in e and e["rule"]["table"] == "basisit" and e["rule"]["chain"] == cname
        ]
        if not rules:
            problems.append(f"{cname}: empty")
            continue
        first, last = _match(rules[0]["expr"]), rules[-1]["expr"]
        inside = first.get("ifnames", set())
        inside_first = bool(inside) and "proto" not in first and any("accept" in e for e in rules[0]["expr"])
        if not inside_first:
            problems.append(f"{cname}: the first rule does not accept the inside interfaces")
        elif inside & transfer:
            problems.append(f"{cname}: treats the transfer interface(s) {sorted(inside & transfer)} as inside")
        if not any(("drop" in e or "reject" in e) for e in last):
            problems.append(f"{cname}: the last rule neither drops nor rejects")
        expected = {
            (
                f"{r['rule']} {r['direction']}",
                r["proto"],
                r["port_side"],
                tuple(r["ports"]),
                tuple(nftjson.collapse(r["src"])),
                tuple(nftjson.collapse(r["dst"])),
            )
            for r in want_rules.get(hook, [])
        }
        seen = set()
        # every other accept rule, also one put before the inside rule, must be an underlay flow
        for r in rules[1 if inside_first else 0 : -1]:
            if not any("accept" in e for e in r["expr"]):
                continue
            m, comment = _match(r["expr"]), r.get("comment", "")
            if comment == "underlay: path MTU" and "other" in m and m["other"].get("protocol") == "icmp":
                continue
            if comment.startswith("ssh-extra") and m.get("proto") == "tcp" and m.get("ports") == [22]:
                continue  # the lab's control host (basisit_control_sources), SSH only
            key = (
                comment,
                m.get("proto"),
                m.get("port_side"),
                tuple(m.get("ports", [])),
                tuple(m.get("saddr", [])),
                tuple(m.get("daddr", [])),
            )
            if key not in expected:
                problems.append(
                    f"{cname}: rule handle {r.get('handle')} ({comment or 'no comment'}) admits "
                    f"{m.get('proto', 'any protocol')} {m.get('port_side', '')} {m.get('ports', 'any port')} "
                    "that no underlay rule of the allow matrix allows"
                )
            seen.add(key)
        for miss in sorted(expected - seen):
            problems.append(f"{cname}: the underlay flow {miss[0]} ({miss[1]}/{list(miss[3])}) has no rule")
    assert not problems, (
        f"{name}: the transfer link ({', '.join(sorted(transfer))}) carries more than the tunnel: "
        + "; ".join(problems)
    )


@pytest.mark.feature("gateway/underlay")
@pytest.mark.controls(*UNDERLAY_CONTROLS)
def test_transfer_link_carries_only_the_tunnel(host, target):
    """In, out and through the transfer interface only WireGuard to the hub (udp/51820) and the
    SSH that builds or repairs the tunnel pass (the allow rules marked `underlay`); everything
    else is refused there, also when the tunnel is down and a route falls back to that link."""
    _check_underlay(host, target.name)


@pytest.mark.role("zentral_gateway")
@pytest.mark.feature("gateway/underlay")
@pytest.mark.controls(*UNDERLAY_CONTROLS)
def test_zentral_transfer_links_carry_only_the_tunnels(host, target):
    """The same on zentral's router for every Kommune's transfer link it holds."""
    _check_underlay(host, target.name)
