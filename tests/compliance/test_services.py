"""Site services as a client sees them: DNS through the gateway, DHCP leases, NTP answers."""

from __future__ import annotations

import shlex

import pytest

from basisit.verify.suite import estate, udp_dns_probe

pytestmark = pytest.mark.role("endpoint")

NTP_PROBE = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n"
    "s.sendto(b'\\x1b'+47*b'\\0',(sys.argv[1],123))\n"
    "try:\n d=s.recv(48);print('answer' if len(d)>=48 and d[0]&7==4 else 'garbage')\n"
    "except OSError:print('timeout')\n"
)


def _gateway_client_address(target) -> str:
    site = estate().site(target.kommune)
    return str(site.zones["client"].gateway)


@pytest.mark.feature("gateway/dns")
@pytest.mark.controls("wiba:Netze", "gs:NET.1.1.A5")
def test_resolver_answers_clients(host, target):
    assert udp_dns_probe(host, _gateway_client_address(target), "localhost") == "answer"


@pytest.mark.feature("gateway/dns")
@pytest.mark.controls("gs:APP.2.2.A10", "wiba:Netze")
def test_ad_names_resolve_through_gateway(host, target):
    """The gateway's resolver answers for the AD zone (forwarded to the DCs) with the DCs' model addresses."""
    site = estate().site(target.kommune)
    gw = _gateway_client_address(target)
    for dc in site.hosts_with_role("ad_dc"):
        out = host.run("dig +short +time=2 +tries=2 @%s %s A", gw, dc.fqdn)
        assert out.rc == 0, f"dig @{gw} {dc.fqdn}: {out.stdout.strip() or out.stderr.strip()}"
        got = out.stdout.split()
        assert str(dc.address) in got, f"{dc.fqdn} through the gateway's resolver {gw}: {got}; expected {dc.address}"


@pytest.mark.feature("gateway/ntp")
@pytest.mark.controls("gs:OPS.1.1.5.A4", "gs:NET.3.2.A22")
def test_ntp_answers_clients(host, target):
    out = host.check_output(f"python3 -c {shlex.quote(NTP_PROBE)} %s", _gateway_client_address(target))
    assert out.strip() == "answer", f"NTP at {_gateway_client_address(target)}: {out.strip()}"


@pytest.mark.feature("endpoint/dhcp")  # the lab configures endpoints statically; gated until they use DHCP
@pytest.mark.controls("gs:NET.1.1.A6", "wiba:Netze")
def test_address_leased_by_dhcp(host, target):
    """The endpoint holds its reserved model address as a DHCP lease (dynamic), not a static one."""
    want = dict(target.addresses)["client"]
    out = host.check_output("ip -4 -o addr show")
    line = next((ln for ln in out.splitlines() if f" {want}/" in ln), "")
    assert line, f"{want} not configured"
    assert "dynamic" in line, f"{want} is configured statically, not leased"
