"""The roles converge on a fresh lab site and change nothing on a converged one.

Uses the session lab of tests/lab/conftest.py (nalbach, bous and zentral): runs
`playbooks/site.yml -l nalbach,zentral` twice and asserts from the PLAY RECAP that the first
run succeeds everywhere and the second reports changed=0 on every host. The module leaves the
lab as it found it: its hosts are re-created (lab down, lab up) afterwards, so the lab's own
tests run against unconfigured hosts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
LIMIT = "nalbach,zentral"
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)
# The hosts the lab realises for nalbach and zentral (endpoints beyond the lab cap are not_realised).
EXPECTED_HOSTS = {
    "nalbach-gw",
    "nalbach-dc1",
    "nalbach-nal-ws-001",
    "zentral-gw",
    "zentral-mgmt",
    "zentral-backup",
    "zentral-log",
}


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines as {host: {ok, changed, unreachable, failed, ...}}."""
    return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(output)}


def test_recap_parser():
    out = "PLAY RECAP ***\nnalbach-gw                 : ok=40   changed=3    unreachable=0    failed=0    skipped=5    rescued=0    ignored=0\n"
    assert recap(out) == {
        "nalbach-gw": {"ok": 40, "changed": 3, "unreachable": 0, "failed": 0, "skipped": 5, "rescued": 0, "ignored": 0}
    }


def _playbook(lab, *extra: str, timeout: float = 1500) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(lab.env, BASISIT_STATE=str(lab.state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_CONTROL_PATH_DIR"] = str(lab.state / "ansible-cp")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/site.yml", "-l", LIMIT, *extra]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


@pytest.fixture(scope="module")
def converged(lab):
    """Converge nalbach + zentral once; afterwards re-create the lab's hosts (unconfigured)."""
    first, first_s = _playbook(lab)
    yield lab, first, first_s
    lab.cli("lab", "down", "--all")
    lab.cli("lab", "up", *[a for s in lab.sites for a in ("--kommune", s)])


def _assert_recap(p: subprocess.CompletedProcess, what: str) -> dict[str, dict[str, int]]:
    r = recap(p.stdout)
    tail = p.stdout[-6000:] + p.stderr[-2000:]
    assert set(r) == EXPECTED_HOSTS, f"{what}: recap hosts {sorted(r)}:\n{tail}"
    bad = {h: v for h, v in r.items() if v["failed"] or v["unreachable"]}
    assert not bad and p.returncode == 0, f"{what}: failed/unreachable {bad} (rc {p.returncode}):\n{tail}"
    return r


def test_first_run_converges(converged):
    _, first, seconds = converged
    _assert_recap(first, "first run")
    print(f"first converge of {LIMIT}: {seconds:.1f} s")


def test_second_run_changes_nothing(converged):
    lab, first, _ = converged
    if first.returncode != 0:
        pytest.fail("the first run failed; see test_first_run_converges")
    second, seconds = _playbook(lab)
    r = _assert_recap(second, "second run")
    changed = {h: v["changed"] for h, v in r.items() if v["changed"]}
    assert not changed, f"second run changed {changed}:\n{second.stdout[-8000:]}"
    print(f"idempotent re-run of {LIMIT}: {seconds:.1f} s")


def test_check_mode_on_converged_site_changes_nothing(converged):
    lab, first, _ = converged
    if first.returncode != 0:
        pytest.fail("the first run failed; see test_first_run_converges")
    check, _ = _playbook(lab, "--check", "--diff")
    r = _assert_recap(check, "--check --diff")
    changed = {h: v["changed"] for h, v in r.items() if v["changed"]}
    assert not changed, f"--check --diff reports changes {changed}:\n{check.stdout[-8000:]}"
