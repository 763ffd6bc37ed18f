"""Everything between a site and zentral inside the tunnel (issue 12, item 2), on the converged
session lab (nalbach + zentral).

First the path is shown and checked: nalbach's gateway routes zentral's backup and log hosts into
wg-basisit, the hub routes nalbach's hosts into it, a backup runs while a capture on the gateway's
transfer NIC (the host end of its veth) sees only WireGuard (udp/51820) and SSH there, and the
checks pass. Then the tunnel is stopped on nalbach's gateway (wg-quick down): once the hub sees
the handshake go stale it stops routing nalbach's block into the tunnel; a backup from nalbach's DC
fails (non-zero) while the capture sees no tcp/8000 (nor anything but WireGuard, SSH and ICMP) and
the gateway's underlay reject counter counts the attempt; the checks fail naming the gateway; with
the gateway's own underlay output opened for tcp/514 on purpose, a log line it sends over the
transfer link reaches no log host (zentral's gateway refuses it and counts it: the log host's input
from a site is tunnel-only on zentral's side too); the
next converge of the tunnel brings it back and the checks pass. Last, a rule admitting tcp/8000
on the transfer link is named by the check and removed by the next converge.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import playbook
import pytest
from playbook import by_test as _by_test
from playbook import host_address as _addr

from basisit.lab import names

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
IFACE = "wg-basisit"
CHECKS = {
    "test_vpn::test_zentral_flows_route_into_the_tunnel",
    "test_vpn::test_hub_routes_each_checked_kommune_into_its_tunnel",
    "test_vpn::test_transfer_link_carries_only_the_tunnel",
    "test_vpn::test_zentral_transfer_links_carry_only_the_tunnels",
    "test_vpn::test_tunnel_to_hub_is_up",
}
SELECT = "tunnel or transfer_link or transfer_links"
STALE_SECONDS = 300  # the hub's handshake limit (180 s) + its keeper's interval, with room


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the tunnel checks")
    state = playbook.verify_state(lab, "verify-tunnel")
    k = lab.estate.site(KOMMUNE)
    gw = k.hosts_with_role("gateway")[0]
    dc = k.hosts_with_role("backup_client")[0]
    backup = lab.estate.zentral.hosts_with_role("backup_server")[0]
    veth = names.gateway_veth(k, "transfer", lab.prefix)
    return lab, state, gw, dc, backup, veth


def verify(state: Path) -> tuple:
    return playbook.verify(state, "--zentral", "--jobs", "2", "--", "-k", SELECT)


def _route_dev(lab, host: str, address: str) -> str:
    r = lab.ssh(host, f"ip -j -4 route get {address}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0].get("dev", "")


class Capture:
    """Every IPv4 packet through one interface of the lab host (AF_PACKET, as tcpdump reads it):
    (proto, src, sport, dst, dport) per packet; ports 0 for ICMP. ETH_P_ALL, as tcpdump: a socket
    bound to ETH_P_IP alone sees neither what the host sends out of the port nor, on a bridge port
    (the transfer veth is one), what arrives (the bridge takes the frame before protocol handlers)."""

    def __init__(self, iface: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))  # ETH_P_ALL
        self.sock.bind((iface, 0))
        self.sock.settimeout(0.5)
        self.seen: list[tuple[str, str, int, str, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            if frame[12:14] != b"\x08\x00":  # IPv4 only (ARP, IPv6 and the like are not service traffic)
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            ihl, proto = (ip[0] & 15) * 4, ip[9]
            src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
            name = {1: "icmp", 6: "tcp", 17: "udp"}.get(proto, str(proto))
            sport = dport = 0
            if proto in (6, 17) and len(ip) >= ihl + 4:
                sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
            self.seen.append((name, src, sport, dst, dport))

    def close(self) -> list[tuple[str, str, int, str, int]]:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        return self.seen


def _not_tunnel(seen) -> list:
    """Packets that are neither WireGuard, SSH nor ICMP: service traffic in clear."""
    return [
        p
        for p in seen
        if not (p[0] == "icmp" or (p[0] == "udp" and 51820 in (p[2], p[4])) or (p[0] == "tcp" and 22 in (p[2], p[4])))
    ]


def _reject_count(lab, gw: str) -> int:
    out = lab.ssh(gw, "nft -j list chain inet basisit underlay_forward").stdout
    rules = [e["rule"] for e in json.loads(out)["nftables"] if "rule" in e]
    last = rules[-1]["expr"]
    return next(e["counter"]["packets"] for e in last if "counter" in e)


def _backup(lab, dc: str):
    return lab.ssh(dc, "systemctl start basisit-backup.service", timeout=600)


def test_service_flows_travel_inside_the_tunnel(site):
    lab, state, gw, dc, backup, veth = site
    zgw = _addr(lab, "zentral-gw")
    assert _route_dev(lab, str(gw.address), str(backup.address)) == IFACE
    assert _route_dev(lab, zgw, str(dc.address)) == IFACE
    # the DC's path to the backup host is its gateway (which routes it into the tunnel)
    via = json.loads(lab.ssh(str(dc.address), f"ip -j -4 route get {backup.address}").stdout)[0]
    assert via.get("gateway") == str(gw.addresses["server"]), via
    cap = Capture(veth)
    try:
        r = _backup(lab, str(dc.address))
    finally:
        seen = cap.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(p[0] == "udp" and 51820 in (p[2], p[4]) for p in seen), f"no WireGuard on {veth} during a backup"
    assert not _not_tunnel(seen), f"in clear on {veth}: {sorted(set(_not_tunnel(seen)))[:20]}"
    p, doc = verify(state)
    assert p.returncode == 0, [f"{r['nodeid']}: {r['message']}" for r in playbook.failing(doc)]
    assert set(_by_test(doc, "pass")) >= CHECKS, sorted(_by_test(doc, "pass"))


def test_tunnel_down_backup_fails_nothing_in_clear_and_converge_heals(site):
    lab, state, gw, dc, _, veth = site
    zgw = _addr(lab, "zentral-gw")
    log = lab.estate.zentral.hosts_with_role("log_host")[0]
    # stopped from a transient unit: the SSH session that asks travels through the tunnel itself
    r = lab.ssh(str(gw.address), f"systemd-run --on-active=1 --unit=bt-tunnel-down systemctl stop wg-quick@{IFACE}")
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + STALE_SECONDS
        while _route_dev(lab, zgw, str(dc.address)) == IFACE:
            assert time.monotonic() < deadline, f"the hub still routes {dc.address} into the tunnel"
            time.sleep(5)
        before = _reject_count(lab, str(gw.address))
        cap = Capture(veth)
        try:
            t0 = time.monotonic()
            r = _backup(lab, str(dc.address))
            took = time.monotonic() - t0
        finally:
            seen = cap.close()
        journal = lab.ssh(str(dc.address), "journalctl -u basisit-backup.service -q -n 30 -o cat --no-pager").stdout
        after = _reject_count(lab, str(gw.address))
        p, doc = verify(state)
        # zentral's side holds on its own: the site gateway made to send log lines over the
        # transfer link (its underlay output opened on purpose) reaches no log host; the zentral
        # gateway's underlay chain refuses tcp/514 from outside the tunnel and counts it
        opened = 'tcp dport 514 accept comment \\"broken-on-purpose\\"'
        assert lab.ssh(str(gw.address), f"nft insert rule inet basisit underlay_output {opened}").returncode == 0
        zbefore = _reject_count(lab, zgw)
        log_sent = lab.ssh(str(gw.address), f"timeout 10 bash -c 'echo forged-in-clear > /dev/tcp/{log.address}/514'")
        zafter = _reject_count(lab, zgw)
    finally:
        lab.ssh(str(gw.address), "systemctl reload nftables || systemctl restart nftables")
        lab.ssh(str(gw.address), "systemctl reset-failed bt-tunnel-down.timer bt-tunnel-down.service; true")
        healed, _ = playbook.run(lab, "--tags", "vpn", limit=gw.name)
    assert r.returncode != 0, f"the backup succeeded with the tunnel down: {r.stdout[-2000:]}"
    assert "Fatal" in journal or "unable" in journal, journal
    assert not [x for x in seen if 8000 in (x[2], x[4])], f"tcp/8000 on {veth} with the tunnel down"
    assert not _not_tunnel(seen), f"in clear on {veth}: {sorted(set(_not_tunnel(seen)))[:20]}"
    assert after > before, f"the gateway's underlay reject counter did not count the backup ({before} -> {after})"
    assert log_sent.returncode != 0, "a log line from the site reached the log host over the transfer link"
    assert zafter > zbefore, f"zentral's underlay reject counter did not count tcp/514 ({zbefore} -> {zafter})"
    print(f"backup with the tunnel down failed after {took:.0f} s")
    assert p.returncode == 1, p.stdout[-3000:]
    failed = _by_test(doc, "fail")
    (route,) = failed["test_vpn::test_zentral_flows_route_into_the_tunnel"]
    assert route["host"] == gw.name and gw.name in route["message"] and "server-backup" in route["message"]
    assert {"gs:NET.3.3.A4", "gs:CON.1.A1"} <= set(route["controls"])
    assert "test_vpn::test_tunnel_to_hub_is_up" in failed
    # the firewall held: the transfer link still admits only the tunnel
    assert "test_vpn::test_transfer_link_carries_only_the_tunnel" in _by_test(doc, "pass")
    assert healed.returncode == 0, healed.stdout[-3000:]
    assert playbook.recap(healed.stdout)[gw.name]["changed"] >= 1
    deadline = time.monotonic() + 60
    while _route_dev(lab, zgw, str(dc.address)) != IFACE:
        assert time.monotonic() < deadline, "the hub did not route nalbach into the tunnel again"
        time.sleep(2)
    again, _ = playbook.run(lab, "--tags", "vpn", limit=gw.name)
    assert again.returncode == 0 and playbook.recap(again.stdout)[gw.name]["changed"] == 0, again.stdout[-3000:]
    r = _backup(lab, str(dc.address))
    assert r.returncode == 0, r.stdout + r.stderr
    p, doc = verify(state)
    assert p.returncode == 0, [f"{r['nodeid']}: {r['message']}" for r in playbook.failing(doc)]


def test_extra_transfer_rule_is_named_and_converge_removes_it(site):
    lab, state, gw, *_ = site
    address = str(gw.address)
    r = lab.ssh(address, "nft insert rule inet basisit underlay_forward tcp dport 8000 accept")
    assert r.returncode == 0, r.stderr
    try:
        p, doc = verify(state)
    finally:
        healed, _ = playbook.run(lab, "--tags", "underlay", limit=gw.name)
    assert p.returncode == 1, p.stdout[-3000:]
    (bad,) = _by_test(doc, "fail")["test_vpn::test_transfer_link_carries_only_the_tunnel"]
    assert bad["host"] == gw.name and "underlay_forward" in bad["message"] and "8000" in bad["message"], bad["message"]
    assert healed.returncode == 0 and playbook.recap(healed.stdout)[gw.name]["changed"] >= 1, healed.stdout[-3000:]
    assert "dport 8000" not in lab.ssh(address, "nft list chain inet basisit underlay_forward").stdout
    again, _ = playbook.run(lab, "--tags", "underlay", limit=gw.name)
    assert again.returncode == 0 and playbook.recap(again.stdout)[gw.name]["changed"] == 0, again.stdout[-3000:]
