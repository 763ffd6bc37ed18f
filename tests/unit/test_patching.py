"""The patch path's logic without a lab: the lab's forwarder against real local servers, the
package proxy's place in the allow matrix, the patch checks' parsing."""

from __future__ import annotations

import http.client
import http.server
import importlib.machinery
import importlib.util
import ipaddress
import socket
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from basisit import policy
from basisit.lab import forwarder
from basisit.validate import load_estate
from basisit.verify import patching as checks

ROOT = Path(__file__).resolve().parents[2]
ESTATE = load_estate(ROOT / "inventory")


def _load(name: str, path: Path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- the forwarder ------------------------------------------------------------------------


class _Mirror(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def do_GET(self):
        self.seen.append((self.command, self.path, self.headers.get("Host", "")))
        body = b"Origin: Debian\n" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def _serve(server) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t


@pytest.fixture()
def lab_path():
    """A 'mirror' on 127.0.0.1 and the forwarder on 127.0.0.1 admitting peer 127.0.0.1 to it."""
    _Mirror.seen = []
    mirror = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    _serve(mirror)
    mport = mirror.server_address[1]
    fw = forwarder.make_server("127.0.0.1", 0, forwarder.Policy(["127.0.0.1"], [f"127.0.0.1:{mport}"]))
    _serve(fw)
    yield fw.server_address[1], mport
    fw.shutdown()
    mirror.shutdown()
    fw.server_close()
    mirror.server_close()


def _ask(port: int, method: str, target: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, target)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_forwarder_forwards_a_get_and_a_head_to_the_mirror(lab_path):
    port, mport = lab_path
    status, body = _ask(port, "GET", f"http://127.0.0.1:{mport}/debian/dists/bookworm/InRelease?x=1")
    assert status == 200 and body == b"Origin: Debian\n" * 100
    status, body = _ask(port, "HEAD", f"http://127.0.0.1:{mport}/debian/dists/bookworm/Release")
    assert status == 200 and body == b""
    assert _Mirror.seen == [
        ("GET", "/debian/dists/bookworm/InRelease?x=1", f"127.0.0.1:{mport}"),
        ("HEAD", "/debian/dists/bookworm/Release", f"127.0.0.1:{mport}"),
    ]


@pytest.mark.parametrize(
    "method,target",
    [
        ("GET", "http://example.org/debian/dists/bookworm/InRelease"),  # another host
        ("GET", "http://127.0.0.1:1/debian/"),  # the mirror's host on another port
        ("GET", "/debian/dists/bookworm/InRelease"),  # not a proxy request
        ("GET", "https://127.0.0.1/debian/"),
        ("POST", "http://127.0.0.1/debian/"),
        ("PUT", "http://127.0.0.1/debian/"),
        ("DELETE", "http://127.0.0.1/debian/"),
        ("CONNECT", "127.0.0.1:443"),
        ("OPTIONS", "*"),
    ],
)
def test_forwarder_refuses_everything_else_with_403(lab_path, method, target):
    port, mport = lab_path
    target = target.replace("127.0.0.1/", f"127.0.0.1:{mport}/") if method != "GET" else target
    status, _ = _ask(port, method, target)
    assert status == 403, (method, target, status)
    assert _Mirror.seen == []


def test_forwarder_refuses_other_peers():
    """Only the peers given may use it: the same request from 127.0.0.1 is refused when only
    another address is admitted."""
    _Mirror.seen = []
    mirror = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    _serve(mirror)
    mport = mirror.server_address[1]
    fw = forwarder.make_server("127.0.0.1", 0, forwarder.Policy(["10.160.0.10"], [f"127.0.0.1:{mport}"]))
    _serve(fw)
    try:
        status, body = _ask(fw.server_address[1], "GET", f"http://127.0.0.1:{mport}/debian/")
        assert status == 403 and b"may not use this proxy" in body
        assert _Mirror.seen == []
    finally:
        fw.shutdown()
        mirror.shutdown()
        fw.server_close()
        mirror.server_close()


def test_forwarder_reports_an_unreachable_mirror_as_502():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    fw = forwarder.make_server("127.0.0.1", 0, forwarder.Policy(["127.0.0.1"], [f"127.0.0.1:{dead}"]))
    _serve(fw)
    try:
        status, _ = _ask(fw.server_address[1], "GET", f"http://127.0.0.1:{dead}/debian/")
        assert status == 502
    finally:
        fw.shutdown()
        fw.server_close()


def test_forwarder_policy_parses_hosts_and_ports():
    p = forwarder.Policy(["10.160.0.10"], ["deb.debian.org", "mirror.example:8080"])
    assert p.target("GET", "http://deb.debian.org/debian/x?y") == ("deb.debian.org", 80, "/debian/x?y")
    assert p.target("GET", "http://mirror.example:8080/d") == ("mirror.example", 8080, "/d")
    assert "not a package source" in p.target("GET", "http://deb.debian.org:8080/d")
    assert "credentials" in p.target("GET", "http://u:p@deb.debian.org/d")
    assert p.refuse_peer("10.160.0.10") is None
    assert "may not use" in p.refuse_peer("10.160.0.62")


# --- the package proxy in the model ---------------------------------------------------------


def test_package_proxy_is_zentrals_mgmt_host_reached_by_every_host():
    [proxy] = ESTATE.zentral.hosts_with_role("package_proxy")
    assert proxy.name == "zentral-mgmt"
    p = policy.package_proxy(ESTATE, proxy)
    assert p["port"] == 3142 and p["listen"] == [str(proxy.address)]
    assert p["url"] == f"http://{proxy.address}:3142/"
    for h in ESTATE.hosts():
        assert policy.package_proxy(ESTATE, h)["url"] == p["url"]
        if h.name == proxy.name:
            continue
        # every other host may open the proxy's port (the gateways, routers and nftables follow)
        assert policy.allowed(ESTATE, ESTATE.site(h.site), _source(h), proxy.address, "tcp", 3142) or policy.allowed(
            ESTATE, ESTATE.zentral, _source(h), proxy.address, "tcp", 3142
        ), h.name
    assert policy.package_proxy(ESTATE, ESTATE.site("nalbach").hosts[1])["listen"] == []


def _source(h):
    """The address a host reaches zentral from: its own (a site gateway its management address,
    the source of its routes into the tunnel)."""
    return h.address


def test_package_flows_from_the_sites_travel_inside_the_tunnel():
    """A site's flows to the package proxy are site<->zentral traffic: routed into the tunnel,
    never admitted on the transfer link (no *-packages rule is marked underlay)."""
    packages = set(policy.package_proxy_rules(ESTATE))
    assert not [r.name for r in ESTATE.standard.allow if r.name in packages and r.underlay]
    for slug in ("nalbach", "homburg"):
        site = ESTATE.site(slug)
        tunnel = {f.rule for f in policy.tunnel_flows(ESTATE, site)}
        assert {"server-packages", "client-packages", "gateway-packages"} <= tunnel, (slug, sorted(tunnel))
        assert not packages & {f.rule for f in policy.underlay_flows(ESTATE, site)}
        [gw] = site.hosts_with_role("gateway")
        # the gateway's own apt from its management address: inside the networks it routes into the tunnel
        nets = [ipaddress.ip_network(n) for n in policy.vpn_networks(ESTATE, gw)]
        proxy = ESTATE.zentral.hosts_with_role("package_proxy")[0]
        assert any(ipaddress.ip_address(str(proxy.address)) in n for n in nets), nets


def test_package_proxy_rules_ride_the_gateways_forward_rules():
    nalbach = ESTATE.site("nalbach")
    [gw] = nalbach.hosts_with_role("gateway")
    fwd = {r["rule"] for r in policy.forward_rules(ESTATE, gw)}
    assert {"server-packages", "client-packages"} <= fwd
    [zgw] = ESTATE.zentral.hosts_with_role("zentral_gateway")
    zfwd = {r["rule"] for r in policy.forward_rules(ESTATE, zgw)}
    assert {"server-packages", "client-packages", "gateway-packages", "zentral-packages"} <= zfwd


def test_package_proxy_needs_one_tcp_port():
    import dataclasses

    std = ESTATE.standard
    rules = [r.model_copy(update={"ports": [3142, 3143]}) if r.name == "client-packages" else r for r in std.allow]
    broken = dataclasses.replace(ESTATE, standard=std.model_copy(update={"allow": rules}))
    [proxy] = ESTATE.zentral.hosts_with_role("package_proxy")
    with pytest.raises(policy.PolicyError, match="one tcp port"):
        policy.package_proxy(broken, proxy)


# --- the checks' parsing --------------------------------------------------------------------

SIM = """NOTE: This is only a simulation!
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable-updates [all])
Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64]) []
Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
"""


def test_pending_security_keeps_security_origins_only():
    assert checks.pending_security(SIM) == ["libssl3 3.0.17-1~deb12u2", "openssl 3.0.17-1~deb12u2"]
    helper = _load("basisit_patch", ROOT / "roles" / "base" / "files" / "basisit-patch")
    assert helper.INST.pattern == checks.INST.pattern  # the helper records what the check reads


def test_overdue_by_first_seen():
    now = 1_000_000_000.0
    pending = ["a 1", "b 2", "c 3"]
    ledger = {"a 1": now - 8 * 86400, "b 2": now - 6 * 86400}
    assert checks.overdue(pending, ledger, now, 7) == ["a 1"]  # c: never recorded = new
    assert checks.overdue(pending, ledger, now, 0) == ["a 1", "b 2"]


def test_update_failure_names_the_hop():
    proxy = "http://10.160.0.10:3142/"
    down = "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Could not connect to 10.160.0.10:3142 (10.160.0.10). - connect (111: Connection refused)"
    msg = checks.update_failure("nalbach-dc1", proxy, down, 100)
    assert msg.startswith("nalbach-dc1: the package proxy http://10.160.0.10:3142/ is unreachable")
    up = "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  503  Connection refused [IP: 10.160.0.10 3142]"
    assert "its upstream" in checks.update_failure("zentral-log", proxy, up, 100)
    assert "no answer within" in checks.update_failure("zentral-log", proxy, "", 124)


def test_patch_helper_records_first_seen_and_forgets_installed(tmp_path, monkeypatch):
    helper = _load("basisit_patch", ROOT / "roles" / "base" / "files" / "basisit-patch")
    monkeypatch.setattr(helper, "STATE", tmp_path)
    monkeypatch.setattr(helper, "LEDGER", tmp_path / "pending-security.json")
    monkeypatch.setattr(helper.time, "time", lambda: 1000.0)
    helper.record(["a 1", "b 2"])
    monkeypatch.setattr(helper.time, "time", lambda: 5000.0)
    helper.record(["b 2", "c 3"])
    assert helper._read(helper.LEDGER, {}) == {"b 2": 1000, "c 3": 5000}


def test_inventory_cache_is_keyed_on_the_upstream_record(tmp_path):
    """The plugin's cache input is the very file the lab writes (so a restarted forwarder is seen)."""
    import sys

    from basisit.lab import plan

    sys.path.insert(0, str(ROOT / "plugins" / "inventory"))
    try:
        plugin = _load("basisit_inventory_plugin", ROOT / "plugins" / "inventory" / "basisit.py")
    finally:
        sys.path.pop(0)
    assert plugin.upstream_record_file(str(tmp_path)) == plan.upstream_record_path(tmp_path)
