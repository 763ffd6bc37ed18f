"""Lab test fixtures: a lab of its own (prefix `bt`, state under /tmp), clean before and after.

Module order (see pytest_collection_modifyitems): the lab's own tests on unconfigured hosts
first (tests/lab/test_lab.py), then one converge of nalbach + zentral (the session fixture
`converged`) shared by test_converge, test_verify, test_hardening and test_rollout, and the teardown check of
test_lab (`test_down_leaves_nothing`) last. Converging once keeps the lab stage of CI short.

The session removes stale lab objects of a previous, interrupted run by their exact names (the
names the lab derives from the model for prefix `bt`) before it starts and again at the end, so
the host is left clean even when a test fails. A lab of another state directory that holds the
machine is taken down by its own `lab down` when it is stale (nothing of it runs) or under CI;
a developer's running lab is never touched outside CI.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "bt"
STATE = Path("/tmp/basisit-labtest/state")
# Images are cached across sessions (keyed by the package list's hash), so only the first run
# on a machine pays for debootstrap.
IMAGES = Path("/tmp/basisit-labtest-images")
SITES = ["nalbach", "bous"]
# One lab test session per machine: the session stops machines and deletes links by their exact
# `bt` names, which a second, concurrent session would share.
SESSION_LOCK = Path("/tmp/basisit-labtest.lock")  # a model Kommune (size S) and another small one to prove isolation


@dataclass
class Lab:
    state: Path
    env: dict[str, str]
    estate: object
    up_output: str
    up_seconds: float
    prefix: str = PREFIX
    sites: tuple[str, ...] = tuple(SITES)

    def cli(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(ROOT / "inventory"), "--state", str(self.state)]
        p = subprocess.run([*cmd, *args], capture_output=True, text=True, env=self.env, timeout=timeout, cwd=ROOT)
        if check and p.returncode != 0:
            raise AssertionError(f"basisit {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def ssh(
        self, address: str, command: str, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess:
        from basisit.lab import ssh

        return ssh.run(self.state, address, command, input=input, timeout=timeout)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASISIT_LAB_PREFIX=PREFIX, BASISIT_LAB_IMAGES=str(IMAGES), BASISIT_STATE=str(STATE))
    return env


def _sweep(estate) -> None:
    """Remove every object of the test lab by exact name, whatever state the last run left."""
    from basisit.lab import lab, names, system

    # Another lab holds the machine. Stale (nothing of it runs: an interrupted session's bridges,
    # routes, mounts) or in CI (no developer's lab can be running there): take it down by its own
    # names. A developer's running lab outside CI is left alone; `lab up` then says which it is.
    o = lab.owner()
    if (
        o
        and o != {"state": str(STATE.resolve()), "prefix": PREFIX}
        and (os.environ.get("CI") or not lab.owner_active(o))
    ):
        lab.retire(estate, o)
    if lab.owns(STATE, PREFIX):  # never the route of another lab that holds this machine
        lab.remove_control(estate, PREFIX)
    lab.sweep(estate, estate.sites, STATE, PREFIX)
    system.remove_group_if_empty(names.cgroup_group(PREFIX))
    if STATE.exists():
        for d in (STATE / "lab" / "hosts").glob("*/root"):
            system.unmount(d)
        assert not _mounts_under(STATE), f"mounts left under {STATE}: {_mounts_under(STATE)}"
        shutil.rmtree(STATE)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return [t for t in (line.split()[4] for line in fh) if t.startswith(f"{path}/")]


# Lab modules in the order they need the lab: unconfigured hosts, then one shared converge.
MODULE_ORDER = (
    "test_lab.py",
    "test_converge.py",
    "test_verify.py",
    "test_hardening.py",
    "test_access.py",
    "test_rollout.py",
)
LAST = "test_lab.py::test_down_leaves_nothing"
# Right before LAST: modules that take a Kommune away (test_retire retires bous).
FINAL_MODULES = ("test_retire.py",)


def pytest_collection_modifyitems(session, config, items):
    def key(item) -> tuple[int, int]:
        name = item.path.name
        if item.nodeid.endswith(LAST):
            return (len(MODULE_ORDER) + 2, 0)
        if name in FINAL_MODULES:
            return (len(MODULE_ORDER) + 1, FINAL_MODULES.index(name))
        return (MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER), 0)

    items.sort(key=key)  # stable: file order inside a module is kept


@pytest.fixture(scope="session")
def converged(lab):
    """nalbach + zentral converged once by `playbooks/site.yml` (the first run's result and seconds)."""
    import playbook

    # seeded in clear, as an older state holds it: the lookup replaces it and writes it encrypted
    seeded = lab.state / "secrets" / "nalbach" / "ad-administrator"
    seeded.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    seeded.write_text(playbook.LETTERS_ONLY_ADMIN_PASSWORD + "\n", encoding="utf-8")
    first, seconds = playbook.run(lab)
    return lab, first, seconds


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        # In CI a skipped lab stage would pass silently: there, not being root is a failure.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("lab tests need root, and CI=true: run the lab stage (make lab-test) as root", pytrace=False)
        pytest.skip("lab tests need root (make lab-test runs them as root in CI)")
    from basisit.validate import load_estate

    lock = open(SESSION_LOCK, "w")  # noqa: SIM115 - held for the whole session
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        pytest.fail(f"another lab test session holds {SESSION_LOCK}; run the lab tests one session at a time")
    estate = load_estate(ROOT / "inventory")
    _sweep(estate)
    STATE.mkdir(parents=True)
    env = _env()
    t0 = time.monotonic()
    lab = Lab(STATE, env, estate, "", 0.0)
    try:
        args = [a for s in SITES for a in ("--kommune", s)]
        p = lab.cli("lab", "up", *args)
        lab.up_output, lab.up_seconds = p.stdout, time.monotonic() - t0
        yield lab
    finally:
        try:
            lab.cli("lab", "down", "--all", check=False)
            _sweep(estate)
        finally:
            lock.close()
