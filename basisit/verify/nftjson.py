"""What a live nftables ruleset admits, read from `nft -j list ruleset`.

The compliance checks compare a host's live chains with what basisit.policy says (the one
resolver): `admitted(ruleset, "input", "tcp", 514)` is the set of IPv4 sources from which a new
tcp/514 connection passes every base chain of the input hook, with the rules that let it through.

The reading is conservative: a match this module does not understand is taken as matching
everything, and a rule that jumps elsewhere as accepting. It may therefore report more sources
than the kernel admits (a check then fails and names the rule to look at), never fewer. Rule
order is not modelled: a drop before an accept does not narrow the accept.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Net = ipaddress.IPv4Network
EVERYWHERE = Net("0.0.0.0/0")
_VERDICTS_THAT_MAY_ACCEPT = ("accept", "jump", "goto")


@dataclass(frozen=True)
class Admits:
    """One rule (or a chain's policy) letting new connections through, and from where."""

    chain: str  # "inet basisit input"
    handle: int | None  # None: the chain's policy accept
    comment: str
    sources: tuple[Net, ...]

    @property
    def label(self) -> str:
        if self.handle is None:
            return f"chain {self.chain}: policy accept"
        note = f' comment "{self.comment}"' if self.comment else ""
        return f"chain {self.chain}: rule handle {self.handle}{note}"


def _addresses(right) -> list[Net] | None:
    """The IPv4 networks of a match's right-hand side; None when it is not IPv4 addresses."""
    if isinstance(right, dict) and "set" in right:
        out: list[Net] = []
        for item in right["set"]:
            got = _addresses(item["elem"]["val"] if isinstance(item, dict) and "elem" in item else item)
            if got is None:
                return None
            out += got
        return out
    if isinstance(right, dict) and "prefix" in right:
        p = right["prefix"]
        return [Net(f"{p['addr']}/{p['len']}", strict=False)]
    if isinstance(right, dict) and "range" in right:
        lo, hi = (ipaddress.IPv4Address(a) for a in right["range"])
        return list(ipaddress.summarize_address_range(lo, hi))
    if isinstance(right, str):
        try:
            return [Net(right)]
        except ValueError:
            return None  # a named set (@name) or a symbol
    return None


def _contains_port(right, port: int) -> bool | None:
    """Whether a port match's right-hand side holds `port`; None when it cannot be read."""
    if isinstance(right, bool):
        return None
    if isinstance(right, int):
        return right == port
    if isinstance(right, dict) and "set" in right:
        found = [_contains_port(i, port) for i in right["set"]]
        return None if None in found else any(found)
    if isinstance(right, dict) and "range" in right:
        lo, hi = right["range"]
        return int(lo) <= port <= int(hi)
    return None


def _values(right) -> set[str] | None:
    if isinstance(right, str):
        return {right}
    if isinstance(right, list):
        return {str(v) for v in right}
    if isinstance(right, dict) and "set" in right and all(isinstance(v, str) for v in right["set"]):
        return set(right["set"])
    return None


def rule_sources(expr: list[dict], proto: str, port: int) -> list[Net] | None:
    """The IPv4 sources from which this rule lets a new `proto`/`port` connection through; None
    when it never does (another protocol, port, interface or conntrack state, or no accept)."""
    sources: list[Net] = [EVERYWHERE]
    verdict = False
    for e in expr:
        if any(v in e for v in _VERDICTS_THAT_MAY_ACCEPT):
            verdict = True
            continue
        m = e.get("match")
        if m is None:
            continue
        op, left, right = m.get("op", "=="), m.get("left", {}), m.get("right")
        positive = op in ("==", "in")
        if "payload" in left:
            pl = left["payload"]
            if pl.get("protocol") == "ip6":
                return None  # IPv6 only
            if pl.get("protocol") == "ip" and pl.get("field") == "saddr":
                nets = _addresses(right)
                if positive and nets is not None:
                    sources = _intersect(sources, nets)
                continue
            if pl.get("protocol") == "ip" and pl.get("field") == "protocol":
                vals = _values(right)
                if vals is not None and positive and proto not in vals:
                    return None
                continue
            if pl.get("protocol") in ("tcp", "udp", "icmp", "sctp", "udplite", "dccp"):
                if pl["protocol"] != proto:
                    return None  # a header match of another protocol
                if pl.get("field") == "dport":
                    has = _contains_port(right, port)
                    if has is not None and has != positive:
                        return None
                continue
            continue
        if "meta" in left:
            key = left["meta"].get("key")
            vals = _values(right)
            if key == "l4proto" and vals is not None and positive and proto not in vals:
                return None
            if key in ("iif", "iifname") and vals == {"lo"} and positive:
                return None  # loopback only
            if key == "nfproto" and vals is not None and positive and "ipv4" not in vals:
                return None
            continue
        if "ct" in left and left["ct"].get("key") == "state":
            vals = _values(right)
            if vals is not None and positive and "new" not in vals:
                return None  # established/related/invalid: no new connection
            continue
    return sources if verdict and sources else None


def _intersect(a: list[Net], b: list[Net]) -> list[Net]:
    out = []
    for x in a:
        for y in b:
            if x.subnet_of(y):
                out.append(x)
            elif y.subnet_of(x):
                out.append(y)
    return list(ipaddress.collapse_addresses(out))


def _chain_name(c: dict) -> str:
    return f"{c['family']} {c['table']} {c['name']}"


def admitted(ruleset: list[dict], hook: str, proto: str, port: int) -> tuple[list[Net], list[Admits]]:
    """The IPv4 sources a new `proto`/`port` connection passes every base chain of `hook` from
    (collapsed), and every rule or policy that lets it through somewhere."""
    chains = [e["chain"] for e in ruleset if "chain" in e and e["chain"].get("hook") == hook]
    if not chains:
        return [EVERYWHERE], []  # no filter on the hook: everything passes
    effective: list[Net] | None = None
    found: list[Admits] = []
    for c in chains:
        name = _chain_name(c)
        if c.get("policy", "accept") == "accept":
            passes = [EVERYWHERE]
            found.append(Admits(name, None, "", (EVERYWHERE,)))
        else:
            passes = []
            for e in ruleset:
                r = e.get("rule")
                if not r or (r["family"], r["table"], r["chain"]) != (c["family"], c["table"], c["name"]):
                    continue
                src = rule_sources(r.get("expr", []), proto, port)
                if src:
                    passes += src
                    found.append(Admits(name, r.get("handle"), r.get("comment", ""), tuple(src)))
            passes = list(ipaddress.collapse_addresses(passes))
        effective = passes if effective is None else _intersect(effective, passes)
    return list(ipaddress.collapse_addresses(effective or [])), found


def collapse(nets) -> list[Net]:
    return list(ipaddress.collapse_addresses(Net(str(n)) for n in nets))


def beyond(sources, allowed: list[Net]) -> list[Net]:
    """The part of `sources` (networks) that lies outside `allowed` (collapsed)."""
    out: list[Net] = []
    for s in sources:
        rest = [s]
        for a in allowed:
            nxt = []
            for r in rest:
                if r.subnet_of(a):
                    continue
                if a.subnet_of(r):
                    nxt += list(r.address_exclude(a))
                else:
                    nxt.append(r)
            rest = nxt
        out += rest
    return list(ipaddress.collapse_addresses(out))
