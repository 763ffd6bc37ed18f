"""The gateway's forward chain is owned whole (issue 15): an extra accept rule at the top of the
live chain (clients may go anywhere) fails the rule-by-rule check, which names it, and the next
converge of the gateway's forward feature removes it.

Before, only the rules' comments were compared with the allow matrix: a rule without a comment,
or with the comment of an allowed flow, passed every check.
"""

from __future__ import annotations

from pathlib import Path

import playbook
import pytest
from playbook import verify

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the forward chain")
    state = playbook.verify_state(lab, "verify-forward")
    return lab, state


def test_extra_forward_rule_at_the_top_is_named_and_converge_removes_it(site):
    lab, state = site
    gw = next(h for h in lab.estate.site(KOMMUNE).hosts if "gateway" in h.roles)
    clients = str(lab.estate.site(KOMMUNE).zones["client"].network)
    address = str(gw.address)
    r = lab.ssh(address, f"nft insert rule inet basisit forward ip saddr {clients} accept")
    assert r.returncode == 0, r.stderr
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "forward")
    finally:
        healed, _ = playbook.run(lab, "--tags", "forward", limit=gw.name)
    assert p.returncode == 1, p.stdout[-3000:]
    bad = [r for r in doc["results"] if r["state"] == "fail"]
    whole = [r for r in bad if r["test_id"] == "test_gateway::test_forward_chain_is_the_rendered_one"]
    assert whole and whole[0]["host"] == gw.name, [r["nodeid"] for r in bad]
    assert f"rule 1: ip saddr {clients} accept # handle" in whole[0]["message"], whole[0]["message"]
    assert {"gs:NET.1.1.A15", "gs:NET.3.2.A4"} <= set(whole[0]["controls"])
    # the comment-only comparison did not see it (the gap this check closes)
    assert not [r for r in bad if r["test_id"] == "test_gateway::test_forward_rules_match_allow_matrix"]
    assert healed.returncode == 0, healed.stdout[-3000:]
    assert playbook.recap(healed.stdout)[gw.name]["changed"] >= 1
    assert f"ip saddr {clients} accept" not in lab.ssh(address, "nft list chain inet basisit forward").stdout
    again, _ = playbook.run(lab, "--tags", "forward", limit=gw.name)
    assert again.returncode == 0 and playbook.recap(again.stdout)[gw.name]["changed"] == 0, again.stdout[-3000:]
    p, doc = verify(state, "--jobs", "2", "--", "-k", "forward_chain_is_the_rendered")
    assert p.returncode == 0, [f"{r['nodeid']}: {r['message']}" for r in doc["results"] if r["state"] == "fail"]
