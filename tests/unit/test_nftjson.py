"""basisit.verify.nftjson: what a live ruleset admits, read from real `nft -j list ruleset`
output (nftables 1.0.6 of the lab image; the ruleset is in the comment of RULESET)."""

from __future__ import annotations

import ipaddress
import json

from basisit.verify import nftjson

# nft -j list ruleset of (loaded with nft -f in a network namespace of the lab image):
#   table inet basisit { chain input { type filter hook input priority filter; policy drop;
#     ct state established,related accept / ct state invalid counter drop / iif "lo" accept
#     ip protocol icmp icmp type { echo-request, ... } limit rate 20/second accept
#     meta l4proto ipv6-icmp accept
#     ip saddr { 10.160.168.64/26, 10.160.168.128/28 } tcp dport { 514 } counter accept comment "server-log"
#     ip saddr { 10.160.0.10 } tcp dport { 22 } counter accept comment "zentral-mgmt-ssh"
#     ip saddr 10.160.0.62 tcp dport 22 counter accept comment "ssh-extra"
#     tcp dport 514 accept comment "broken-on-purpose"
#     ip saddr 10.9.0.0-10.9.0.255 tcp dport 500-600 accept
#     ip saddr 10.8.0.1 accept } }
# (nft merged the two server-log prefixes into one range.)
RULESET = [
    json.loads(line)
    for line in [
        '{"table": {"family": "inet", "name": "basisit", "handle": 1}}',
        '{"chain": {"family": "inet", "table": "basisit", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 2, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 3, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "icmp"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": {"set": ["destination-unreachable", "echo-request", "time-exceeded", "parameter-problem"]}}}, {"limit": {"rate": 20, "burst": 5, "per": "second"}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "ipv6-icmp"}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 9, "comment": "server-log", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": [{"range": ["10.160.168.64", "10.160.168.143"]}]}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 514}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 10, "comment": "zentral-mgmt-ssh", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.160.0.10"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 11, "comment": "ssh-extra", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.160.0.62"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 12, "comment": "broken-on-purpose", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 514}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 13, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"range": ["10.9.0.0", "10.9.0.255"]}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [500, 600]}}}, {"accept": null}]}}',
        '{"rule": {"family": "inet", "table": "basisit", "chain": "input", "handle": 14, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.8.0.1"}}, {"accept": null}]}}',
    ]
]
N = ipaddress.IPv4Network


def _without(*handles):
    return [e for e in RULESET if e.get("rule", {}).get("handle") not in handles]


def test_the_broken_rule_is_named_and_admits_everything():
    have, admits = nftjson.admitted(RULESET, "input", "tcp", 514)
    assert have == [N("0.0.0.0/0")]
    by_handle = {a.handle: a for a in admits}
    assert set(by_handle) == {9, 12, 13, 14}  # server-log, the broken rule, the port range, the bare saddr
    assert by_handle[12].label == 'chain inet basisit input: rule handle 12 comment "broken-on-purpose"'
    assert nftjson.beyond(by_handle[12].sources, [N("10.160.168.64/26")]) != []


def test_without_the_extra_rules_exactly_the_log_sources():
    have, admits = nftjson.admitted(_without(12, 13, 14), "input", "tcp", 514)
    want = nftjson.collapse(["10.160.168.64/26", "10.160.168.128/28"])
    assert have == want and nftjson.beyond(have, want) == [] and nftjson.beyond(want, have) == []
    assert [a.comment for a in admits] == ["server-log"]


def test_established_loopback_icmp_and_other_ports_do_not_admit():
    have, admits = nftjson.admitted(_without(12, 13, 14), "input", "tcp", 22)
    assert have == nftjson.collapse(["10.160.0.10/32", "10.160.0.62/32"])
    assert {a.comment for a in admits} == {"zentral-mgmt-ssh", "ssh-extra"}
    have, _ = nftjson.admitted(_without(12, 13, 14), "input", "udp", 514)
    assert have == []


def test_a_port_range_and_a_rule_without_port_admit():
    have, _ = nftjson.admitted(_without(9, 12), "input", "tcp", 514)
    assert have == nftjson.collapse(["10.9.0.0/24", "10.8.0.1/32"])
    have, _ = nftjson.admitted(_without(9, 12), "input", "tcp", 601)
    assert have == [N("10.8.0.1/32")]


def test_every_base_chain_of_the_hook_must_pass():
    other = [
        {"chain": {"family": "ip", "table": "t", "name": "in2", "handle": 1, "hook": "input", "policy": "drop"}},
        {"rule": {"family": "ip", "table": "t", "chain": "in2", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.160.168.64", "len": 27}}}},
            {"accept": None}]}},
    ]  # fmt: skip
    have, _ = nftjson.admitted(RULESET + other, "input", "tcp", 514)
    assert have == [N("10.160.168.64/27")]
    accepting = [
        {"chain": {"family": "ip", "table": "t", "name": "in3", "handle": 1, "hook": "input", "policy": "accept"}}
    ]
    have, admits = nftjson.admitted(_without(12, 13, 14) + accepting, "input", "tcp", 514)
    assert have == nftjson.collapse(["10.160.168.64/26", "10.160.168.128/28"])  # the drop chain still filters
    assert any(a.handle is None and a.label == "chain ip t in3: policy accept" for a in admits)
    assert nftjson.admitted([], "input", "tcp", 514)[0] == [N("0.0.0.0/0")]  # no filter at all


def test_a_jump_is_taken_as_accepting_and_ipv6_only_rules_are_not_ipv4():
    jump = {
        "rule": {
            "family": "inet",
            "table": "basisit",
            "chain": "input",
            "handle": 90,
            "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 514}},
                {"jump": {"target": "elsewhere"}},
            ],
        }
    }
    v6 = {
        "rule": {
            "family": "inet",
            "table": "basisit",
            "chain": "input",
            "handle": 91,
            "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fd00::1"}},
                {"accept": None},
            ],
        }
    }
    base = _without(12, 13, 14)
    assert nftjson.admitted([*base, jump], "input", "tcp", 514)[0] == [N("0.0.0.0/0")]
    assert nftjson.admitted([*base, v6], "input", "tcp", 514)[0] == nftjson.admitted(base, "input", "tcp", 514)[0]
