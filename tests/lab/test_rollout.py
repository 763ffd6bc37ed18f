"""`basisit rollout` end to end in the lab: zentral, a canary, a second Kommune killed mid-rollout.

Runs the real commands (lab up, ansible-playbook, basisit verify) through the rollout for the
session lab's Kommunen (nalbach as canary, then bous). While bous converges, one of its hosts is
powered off: bous fails, nalbach finishes verified, the exit status says so. The re-run skips
nalbach (verified at this standard version), brings the missing host back and converges and
verifies bous. The module leaves nalbach, bous and zentral up and converged.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
CANARY, VICTIM = "nalbach", "bous"


def rollout_cmd(lab, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "basisit.cli", "--inventory", str(ROOT / "inventory"), "--state", str(lab.state)]
    return [*base, "rollout", "--kommune", CANARY, "--kommune", VICTIM, "--max-failures", "1", *extra]


def ledger_rows(lab, sql: str, *args) -> list[tuple]:
    path = lab.state / "ledger.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        db.close()


def latest_run(lab) -> int:
    return ledger_rows(lab, "SELECT max(id) FROM runs")[0][0]


def site_results(lab, run_id: int) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for site, step, result in ledger_rows(
        lab, "SELECT site, step, result FROM steps WHERE run_id = ? ORDER BY rowid", run_id
    ):
        out.setdefault(site, []).append((step, result))
    return out


@pytest.fixture(scope="module")
def first_run(lab):
    """A rollout during which one of bous's hosts is powered off once bous's converge starts."""
    victim = next(h for h in lab.estate.kommunen[VICTIM].hosts if h.kind == "dc")
    proc = subprocess.Popen(
        rollout_cmd(lab), cwd=ROOT, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 2400
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        started = ledger_rows(
            lab,
            "SELECT 1 FROM steps WHERE site = ? AND step = 'realise' AND result = 'ok' AND run_id = (SELECT max(id) FROM runs)",
            VICTIM,
        )
        if started and not killed:
            # The host goes down the way a real one does: powered off from inside.
            lab.ssh(str(victim.address), "systemctl poweroff --no-block", timeout=15)
            killed = True
        time.sleep(1)
    if proc.poll() is None:
        proc.kill()
        pytest.fail("rollout did not finish within 40 minutes")
    out = proc.stdout.read()
    return proc.returncode, out, killed, latest_run(lab)


def test_killed_kommune_fails_and_the_others_finish(first_run, lab):
    rc, out, killed, run_id = first_run
    assert killed, f"the rollout never reached {VICTIM}:\n{out[-4000:]}"
    assert rc == 1, out[-4000:]
    results = site_results(lab, run_id)
    assert results["zentral"] == [("realise", "ok"), ("converge", "ok"), ("verify", "ok")], results
    assert results[CANARY] == [("realise", "ok"), ("converge", "ok"), ("verify", "ok")], out[-4000:]
    assert results[VICTIM][0] == ("realise", "ok")
    assert ("converge", "failed") in results[VICTIM] or ("verify", "failed") in results[VICTIM], results
    assert "summary:" in out and "1 failed" in out, out[-2000:]


def test_rerun_resumes_and_converges_the_failed_kommune(first_run, lab):
    p = subprocess.run(rollout_cmd(lab), cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=2400)
    results = site_results(lab, latest_run(lab))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert results[CANARY] == [("verify", "skipped")]
    assert results[VICTIM] == [("realise", "ok"), ("converge", "ok"), ("verify", "ok")]
    assert results["zentral"][-1] == ("verify", "ok"), results
    assert "2 verified" in p.stdout and "1 skipped" in p.stdout, p.stdout[-2000:]  # zentral and bous; nalbach
    # zentral's converge: skipped only with the inputs digest its last good converge recorded
    # (basisit.zentral_inputs), else converged and a new digest recorded
    converges = ledger_rows(
        lab, "SELECT run_id, result, inputs FROM steps WHERE site = 'zentral' AND step = 'converge' ORDER BY rowid"
    )
    previous = [r for r in converges if r[0] < latest_run(lab) and r[1] == "ok"]
    now = [r for r in converges if r[0] == latest_run(lab)]
    assert previous and len(previous[-1][2] or "") == 64, converges
    assert len(now) == 1 and now[0][1] in ("skipped", "ok") and len(now[0][2] or "") == 64, converges
    if now[0][1] == "skipped":
        assert now[0][2] == previous[-1][2], converges
