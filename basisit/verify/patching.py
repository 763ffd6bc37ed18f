"""Reading what apt says for the patching checks (tests/compliance/test_patching.py): pure functions."""

from __future__ import annotations

import re

UPDATE_TIMEOUT = 180  # seconds for one `apt-get update` through the proxy
# `Inst pkg [old] (new Debian-Security:12/stable-security [amd64])` of `apt-get -s upgrade`
# (the same pattern as roles/base/files/basisit-patch, which records what these checks read)
INST = re.compile(r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) ([^)]*)\)")


def pending_security(simulated: str) -> list[str]:
    """`<package> <version>` of every upgrade `apt-get -s upgrade` takes from a security origin."""
    out = []
    for line in simulated.splitlines():
        m = INST.match(line)
        if m and "security" in m.group(3).lower():
            out.append(f"{m.group(1)} {m.group(2)}")
    return sorted(out)


def overdue(pending: list[str], ledger: dict, now: float, max_days: int) -> list[str]:
    """The pending updates first seen more than max_days ago (one never recorded counts as new)."""
    limit = max_days * 86400
    return [p for p in pending if now - float(ledger.get(p, now)) > limit]


def update_failure(name: str, proxy: str, output: str, rc: int) -> str:
    """A readable reason for a failed `apt-get update` through the proxy: which hop failed."""
    lines = [ln.strip() for ln in output.splitlines() if ln.startswith(("E:", "W:", "Err:"))]
    text = " ".join(lines)
    if rc == 124:
        why = f"no answer within {UPDATE_TIMEOUT} s"
    elif re.search(r"\s[45]\d\d\s", text):  # the proxy answered with an HTTP error
        why = (
            f"the package proxy {proxy} answered, but its upstream (the mirror; in the lab the control "
            "host's forwarder) failed"
        )
    elif re.search(r"Could not connect|Unable to connect|Connection refused|timed out", text):
        why = f"the package proxy {proxy} is unreachable"
    else:
        why = "apt-get update failed"
    return f"{name}: {why}: " + (" | ".join(lines[-4:]) or output.strip()[-400:])
