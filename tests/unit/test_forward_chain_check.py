"""test_gateway's rule-by-rule comparison of a live forward chain with the rendered one, on real
`nft list chain` output (nftables 1.0.6 of the lab image, nalbach-gw's chain as base and gateway
render it, shortened)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

RENDERED = """table inet basisit {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ip saddr 10.160.0.62 tcp dport 22 counter packets 0 bytes 0 accept comment "ssh-extra"
		ct state established,related accept
		ct state invalid counter packets 0 bytes 0 drop
		ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 tcp dport 53 counter packets 0 bytes 0 accept comment "client-dns"
		ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 udp dport 53 counter packets 0 bytes 0 accept comment "client-dns"
		counter packets 0 bytes 0 drop comment "not in the allow matrix"
	}
}
"""
# the same chain live (nft -a: handles; counters that have counted)
LIVE = """table inet basisit {
	chain forward { # handle 2
		type filter hook forward priority filter; policy drop;
		ct state established,related accept # handle 12
		ip saddr 10.160.0.62 tcp dport 22 counter packets 31 bytes 2048 accept comment "ssh-extra" # handle 13
		ct state established,related accept # handle 14
		ct state invalid counter packets 0 bytes 0 drop # handle 15
		ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 tcp dport 53 counter packets 4 bytes 240 accept comment "client-dns" # handle 16
		ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 udp dport 53 counter packets 9 bytes 600 accept comment "client-dns" # handle 17
		counter packets 2 bytes 120 drop comment "not in the allow matrix" # handle 40
	}
}
"""


@pytest.fixture(scope="module")
def gateway_checks(request):
    from basisit.verify import plugin

    for m in plugin.MARKERS:  # the suite's markers, as its conftest registers them in a verify run
        request.config.addinivalue_line("markers", m)
    path = ROOT / "tests" / "compliance" / "test_gateway.py"
    spec = importlib.util.spec_from_file_location("_check_gateway", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


def _insert(text: str, after: int, line: str) -> str:
    lines = text.splitlines()
    lines.insert(after, "\t\t" + line)
    return "\n".join(lines) + "\n"


def test_the_same_chain_with_counters_and_handles(gateway_checks):
    assert gateway_checks.chain_differences(RENDERED, LIVE) == ([], [])


def test_an_extra_rule_at_the_top_is_named_by_position_and_handle(gateway_checks):
    live = _insert(LIVE, 3, "ip saddr 10.160.170.0/23 accept # handle 37")
    assert gateway_checks.chain_differences(RENDERED, live) == (
        ["rule 1: ip saddr 10.160.170.0/23 accept # handle 37"],
        [],
    )


def test_an_allowed_comment_on_a_wider_rule_is_still_extra(gateway_checks):
    """The comparison by comment alone passed this; rule by rule it is a changed rule."""
    live = LIVE.replace("ip daddr 10.160.168.74 tcp dport 53", "tcp dport 53")
    extra, missing = gateway_checks.chain_differences(RENDERED, live)
    assert extra == [
        'rule 5: ip saddr 10.160.170.0/23 tcp dport 53 counter packets 4 bytes 240 accept comment "client-dns" # handle 16'
    ]
    assert missing == [
        'rule 5: ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 tcp dport 53 counter packets 0 bytes 0 accept comment "client-dns"'
    ]


def test_a_removed_rule_and_a_changed_policy(gateway_checks):
    live = "\n".join(ln for ln in LIVE.splitlines() if "handle 17" not in ln).replace("policy drop", "policy accept")
    extra, missing = gateway_checks.chain_differences(RENDERED, live)
    assert extra == ["chain: type filter hook forward priority filter; policy accept;"]
    assert missing[0] == "chain: type filter hook forward priority filter; policy drop;"
    assert missing[1].startswith("rule 6: ip saddr 10.160.170.0/23 ip daddr 10.160.168.74 udp dport 53")
