"""`basisit drift` on a real converged lab site: clean reports 0, hand edits are named, converge heals.

Uses the session lab (tests/lab/conftest.py) and its converged nalbach + zentral. A converged
Kommune reports no drift (exit 0). Then two hand edits an operator might make: a line added to
the sshd drop-in the base role manages (on the gateway) and the backup timer stopped (on dc1);
`basisit drift --kommune nalbach` exits 1 and names each host, task and resource, with the
drift-in diff for the file; the JSON report, the history and the dashboard say the same, and no
secret of the state directory appears in them. A converge of nalbach heals both, and the next
drift run is clean again.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import playbook
import pytest

from basisit import secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
DROPIN = "/etc/ssh/sshd_config.d/10-basisit.conf"
HAND_LINE = "ClientAliveInterval 999"  # harmless (sshd is not reloaded), and not the standard's value
TIMER = "basisit-backup.timer"


def drift(lab, *args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(lab.env, BASISIT_STATE=str(lab.state), ANSIBLE_CONTROL_PATH_DIR=str(lab.state / "ansible-cp"))
    cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(ROOT / "inventory"), "--state", str(lab.state)]
    p = subprocess.run([*cmd, "drift", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    runs = sorted((lab.state / "reports" / "drift").glob("*/drift.json"))
    return p, json.loads(runs[-1].read_text(encoding="utf-8")) if runs else {}


def _site(doc: dict) -> dict:
    (k,) = [k for k in doc["kommunen"] if k["kommune"] == KOMMUNE]
    return k


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for drift")
    return lab


def _host(lab, role: str):
    return lab.estate.site(KOMMUNE).hosts_with_role(role)[0]


def test_converged_site_reports_no_drift(site):
    """Check mode (`--check --diff`) on the converged nalbach and zentral changes nothing."""
    p, doc = drift(site, "--kommune", KOMMUNE, "--zentral")
    k = _site(doc)
    assert p.returncode == 0, f"{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    assert k["changes"] == [] and not k["failed"] and not k["unreachable"] and not k["error"]
    assert f"{KOMMUNE}: drift: 0 changes on 0 hosts" in p.stdout
    (z,) = [s for s in doc["kommunen"] if s["kommune"] == "zentral"]
    assert z["changes"] == [] and not z["failed"] and not z["unreachable"] and not z["error"], z
    assert "zentral: drift: 0 changes on 0 hosts" in p.stdout, p.stdout[-3000:]
    assert {"nalbach-gw", "nalbach-dc1"} <= set(k["hosts"])
    print(f"drift phase of {KOMMUNE} (converged, clean): {k['seconds']:.1f} s")


def test_hand_edits_are_drift_and_converge_heals_them(site):
    lab = site
    gw, dc = _host(lab, "gateway"), _host(lab, "ad_dc")
    r = lab.ssh(str(gw.address), f"printf '%s\\n' '{HAND_LINE}' >> {DROPIN}")
    assert r.returncode == 0, r.stderr
    r = lab.ssh(str(dc.address), f"systemctl stop {TIMER}")
    assert r.returncode == 0, r.stderr

    p, doc = drift(lab, "--kommune", KOMMUNE)
    out = f"{p.stdout[-8000:]}\n{p.stderr[-2000:]}"
    assert p.returncode == 1, out
    k = _site(doc)
    assert not k["failed"] and not k["unreachable"] and not k["error"], out
    by = {(c["host"], c["resource"]): c for c in k["changes"]}
    sshd = by.get((gw.name, DROPIN))
    assert sshd is not None, f"no drift of {DROPIN} on {gw.name}: {sorted(by)}"
    assert f"-{HAND_LINE}" in sshd["diff"], sshd["diff"]
    timer = by.get((dc.name, TIMER))
    assert timer is not None, f"no drift of {TIMER} on {dc.name}: {sorted(by)}"
    assert {gw.name, dc.name} <= set(k["hosts_drifted"])
    assert f"DRIFT {gw.name} " in p.stdout and DROPIN in p.stdout

    db = lab.state / "history.sqlite"
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT host, resource FROM drift_changes WHERE run_id = ? AND kommune = ? AND kind = 'change'",
        (doc["run"]["id"], KOMMUNE),
    ).fetchall()
    con.close()
    assert (gw.name, DROPIN) in rows and (dc.name, TIMER) in rows
    page = (lab.state / "reports" / "dashboard" / "kommune" / f"{KOMMUNE}.html").read_text(encoding="utf-8")
    assert "drift:" in page and DROPIN in page and HAND_LINE in page

    # nothing the state's secrets hold is in what drift wrote
    written = (Path(doc["run"]["report_dir"]) / "drift.json").read_text(encoding="utf-8") + page + p.stdout
    written += "".join(
        f.read_text(encoding="utf-8", errors="replace") for f in Path(doc["run"]["report_dir"]).glob("*.log")
    )
    for f in secrets.files(lab.state / "secrets"):
        value = secrets.read_text(f).strip()  # decrypted: the value drift must never write
        if len(value) >= 8:
            assert value not in written, f"the secret of {f.relative_to(lab.state)} is in drift's output"

    healed, _ = playbook.run(lab, limit=KOMMUNE)
    assert healed.returncode == 0, healed.stdout[-6000:] + healed.stderr[-2000:]
    p, doc = drift(lab, "--kommune", KOMMUNE)
    k = _site(doc)
    assert p.returncode == 0 and k["changes"] == [], f"{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    assert lab.ssh(str(dc.address), f"systemctl is-active {TIMER}").stdout.strip() == "active"
