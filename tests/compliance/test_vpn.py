"""The WireGuard tunnel from every site gateway to the zentral hub (roles gateway/vpn, vpn_hub).

Read from the running interfaces (`wg show <if> endpoints|allowed-ips|latest-handshakes`, never
`dump` or `private-key`: verify reads no private key), and proven by traffic: the gateway pings
the hub's tunnel address through the tunnel.
"""

from __future__ import annotations

import time

import pytest

from basisit.verify.suite import connect, context, estate, not_applicable, role_default

pytestmark = pytest.mark.role("gateway")

IFACE = role_default("gateway", "gateway_vpn_interface")
HANDSHAKE_MAX_AGE = 300  # s; with a 25 s keepalive WireGuard renews the session every 2 minutes
CONTROLS = ("gs:NET.1.1.A4", "wiba:Netze")  # zones joined only through the encrypted tunnel


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
    hub_host, hub_conn = hub()
    hub_key = hub_conn.check_output("wg show %s public-key", IFACE).strip()
    mine = peers(host)
    assert list(mine) == [hub_key], f"{target.name}: peers {list(mine)}; expected only the hub {hub_key}"
    p = mine[hub_key]
    assert p["allowed_ips"] == {f"{hub_host.addresses['vpn']}/32"}, p["allowed_ips"]
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
    by_address = {next(iter(p["allowed_ips"]), ""): p for p in peers(host).values()}
    for slug in kommunen:
        want = f"{estate().kommunen[slug].vpn_address}/32"
        assert want in by_address, f"the hub has no peer for {slug} ({want})"
        age = by_address[want]["handshake_age"]
        assert age is not None and age <= HANDSHAKE_MAX_AGE, f"{slug}: last handshake {age} s ago"
