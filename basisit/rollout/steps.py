"""The rollout's steps (realise, converge, verify): each runs the project's own command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from basisit import sitefacts
from basisit.model import ZENTRAL

STEPS = ("realise", "converge", "verify")
ROOT = Path(__file__).resolve().parents[2]


class StepFailed(Exception):
    def __init__(self, detail: str, log: str = ""):
        super().__init__(detail)
        self.detail = detail
        self.log = log


class StepUnreachable(StepFailed):
    """Verify judged nothing failed, but hosts did not answer over SSH: the site is not verified."""


EXIT_UNREACHABLE = 3  # `basisit verify` (and the rollout): nothing failed, some hosts unreachable


StepFn = Callable[[str], None]  # site slug -> None, raises StepFailed


@dataclass
class Commands:
    """The real steps: each runs the project's own command, its output kept in a log file."""

    inventory: Path
    state: Path
    backend: str
    log_dir: Path
    python: str = sys.executable
    _realise_lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, site: str, step: str, argv: list[str], timeout: int, unreachable_rc: int | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{site}-{step}.log"
        env = {**os.environ, "BASISIT_STATE": str(self.state), "BASISIT_INVENTORY": str(self.inventory)}
        env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
        env["ANSIBLE_FORCE_COLOR"] = "0"
        with log.open("w", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(argv)}\n")
            fh.flush()
            try:
                p = subprocess.run(
                    argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(f"{step} timed out after {timeout} s", str(log)) from None
        if unreachable_rc is not None and p.returncode == unreachable_rc:
            down = _unreachable_hosts(log)
            raise StepUnreachable(f"unreachable: {', '.join(down) or 'hosts did not answer over ssh'}", str(log))
        if p.returncode != 0:
            raise StepFailed(f"{step} exited {p.returncode}: {_last_line(log)}", str(log))

    def _basisit(self, *args: str) -> list[str]:
        return [self.python, "-m", "basisit.cli", "--inventory", str(self.inventory), "--state", str(self.state), *args]

    def realise(self, site: str) -> None:
        if self.backend == "cloud":
            if sitefacts.read(self.state, site) is None:
                raise StepFailed(
                    f"no site facts for {site}: run `pulumi up` for its stack, then "
                    f"`basisit facts import --kommune {site} <(pulumi stack output --json)`"
                )
            return
        # One lab change at a time: lab up touches the shared zentral router.
        with self._realise_lock:
            args = ["lab", "up"] + ([] if site == ZENTRAL else ["--kommune", site])
            self._run(site, "realise", self._basisit(*args), timeout=1800)

    def converge(self, site: str) -> None:
        """site.yml for the site; for a Kommune then the restore drill, which takes a backup
        through the normal job and restores it: a new site has a proven first snapshot before
        verify checks its freshness (the nightly timer would only take one at 01:30)."""
        playbook = shutil.which("ansible-playbook", path=str(Path(self.python).parent)) or "ansible-playbook"
        inv = self.inventory / "basisit.yml"
        self._run(
            site, "converge", [playbook, "-i", str(inv), str(ROOT / "playbooks" / "site.yml"), "-l", site], timeout=3600
        )
        if site != ZENTRAL:
            drill = [playbook, "-i", str(inv), str(ROOT / "playbooks" / "restore-drill.yml"), "-l", site]
            self._run(site, "restore-drill", drill, timeout=1800)

    def zentral_inputs(self) -> str:
        """The digest of what zentral's converge is made of (basisit.zentral_inputs)."""
        from basisit import zentral_inputs
        from basisit.validate import load_estate

        return zentral_inputs.digest(load_estate(self.inventory), self.inventory, self.state)

    def verify(self, site: str) -> None:
        select = ["--zentral"] if site == ZENTRAL else ["--kommune", site]
        self._run(site, "verify", self._basisit("verify", *select), timeout=1800, unreachable_rc=EXIT_UNREACHABLE)


def _unreachable_hosts(log: Path) -> list[str]:
    """The hosts `basisit verify` listed as UNREACHABLE in its output."""
    out = []
    for ln in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if ln.startswith("UNREACHABLE "):
            out.append(ln.split()[1])
    return out


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"
