"""`basisit rollout`: realise → converge → verify, per Kommune, wave by wave.

Zentral first; then the first Kommune of the selection alone as a canary; then the rest with
bounded parallelism. The wave halts (no new Kommune starts) once more than `max_failures`
Kommunen failed. A ledger (SQLite in the state directory) records every step with times, the
standard version and the result; a re-run skips Kommunen already verified at the current
standard version (unless --force) and resumes the rest.

Zentral is converged first when the selection has anything to do, unless its ledger entry is
current: its last converge at this standard version and backend passed, its last verify passed,
and the digest of everything its converge is made of (`zentral_inputs`: the model data its roles
consume, incl. the rosters of every Kommune it serves, its facts and host keys, the secrets it
applies, the code) is the one recorded then. --force converges it anyway.

A Kommune whose verify found hosts unreachable (`basisit verify` exit 3: nothing failed, but not
every host answered over SSH) is *unreachable*: not verified (a re-run verifies it again), not
failed either — it neither counts towards --max-failures nor stops the wave as a canary. The
summary lists it apart; the rollout exits 3 when nothing failed but a Kommune was unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from basisit import sitefacts
from basisit.model import ZENTRAL

STEPS = ("realise", "converge", "verify")
ROOT = Path(__file__).resolve().parent.parent

# --- the ledger ----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    backend TEXT NOT NULL,
    standard_version INTEGER NOT NULL,
    selection TEXT NOT NULL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    site TEXT NOT NULL,
    step TEXT NOT NULL,
    standard_version INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    seconds REAL,
    result TEXT,            -- ok | failed | unreachable | skipped
    detail TEXT,
    log TEXT,
    inputs TEXT             -- a converge's inputs digest (zentral), else ''
);
CREATE INDEX IF NOT EXISTS steps_site ON steps(site, step, standard_version);
"""
STEP_COLUMNS = "run_id, site, step, standard_version, started, finished, seconds, result, detail, log, inputs"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Ledger:
    """Every step of every rollout; safe to use from several threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(steps)")}
        if "inputs" not in columns:  # a ledger written before the inputs digest
            self._db.execute("ALTER TABLE steps ADD COLUMN inputs TEXT")

    def close(self) -> None:
        self._db.close()

    def start_run(self, backend: str, version: int, selection: list[str]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (started, backend, standard_version, selection) VALUES (?, ?, ?, ?)",
                (_now(), backend, version, " ".join(selection)),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, result: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET finished = ?, result = ? WHERE id = ?", (_now(), result, run_id))

    def record(
        self,
        run_id: int,
        site: str,
        step: str,
        version: int,
        started: str,
        seconds: float,
        result: str,
        detail: str = "",
        log: str = "",
        inputs: str = "",
    ) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, site, step, version, started, _now(), round(seconds, 2), result, detail, log, inputs),
            )

    def verified(self, site: str, version: int, backend: str) -> bool:
        """True when the site's most recent verify at this standard version (and backend) passed."""
        with self._lock:
            row = self._db.execute(
                "SELECT s.result FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE s.site = ? AND s.step = 'verify' AND s.standard_version = ? AND r.backend = ? "
                "AND s.result != 'skipped' ORDER BY s.rowid DESC LIMIT 1",
                (site, version, backend),
            ).fetchone()
        return bool(row and row[0] == "ok")

    def converged(self, site: str, version: int, backend: str, inputs: str) -> bool:
        """True when the site's most recent converge at this standard version (and backend)
        passed with these inputs (an empty digest never matches)."""
        with self._lock:
            row = self._db.execute(
                "SELECT s.result, s.inputs FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE s.site = ? AND s.step = 'converge' AND s.standard_version = ? AND r.backend = ? "
                "AND s.result != 'skipped' ORDER BY s.rowid DESC LIMIT 1",
                (site, version, backend),
            ).fetchone()
        return bool(inputs and row and row[0] == "ok" and row[1] == inputs)

    def steps(self, run_id: int) -> list[tuple]:
        with self._lock:
            return self._db.execute(
                "SELECT site, step, result, seconds, detail FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()


# --- steps ---------------------------------------------------------------------------------


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


# --- orchestration -------------------------------------------------------------------------


@dataclass
class SiteState:
    slug: str
    step: str = "waiting"
    started: float | None = None
    finished: float | None = None
    result: str = "pending"  # pending | running | verified | failed | unreachable | skipped | not started
    detail: str = ""

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started


@dataclass
class Plan:
    sites: list[str]  # Kommunen in order; the first is the canary
    parallel: int = 2
    max_failures: int = 0
    force: bool = False
    include_zentral: bool = True


class Rollout:
    def __init__(
        self,
        plan: Plan,
        steps: dict[str, StepFn],
        ledger: Ledger,
        version: int,
        backend: str,
        zentral_inputs: Callable[[], str] | None = None,
    ):
        self.plan = plan
        self.steps = steps
        self.ledger = ledger
        self.version = version
        self.backend = backend
        # The digest of zentral's converge inputs; None: zentral is converged whenever it runs.
        self.zentral_inputs = zentral_inputs
        order = ([ZENTRAL] if plan.include_zentral else []) + plan.sites
        self.state = {s: SiteState(s) for s in order}
        self.failures = 0
        self.halted = False
        self.run_id = 0

    def _do(self, slug: str) -> None:
        st = self.state[slug]
        st.started = time.monotonic()
        st.result = "running"
        for step in STEPS:
            if slug == ZENTRAL and step == "verify":
                break  # zentral is verified at the end, after the Kommunen that use its services
            st.step = step
            if slug == ZENTRAL and step == "converge" and self._zentral_current():
                continue
            if not self._step(slug, step):
                return
        st.step = "done"
        st.result = "verified" if slug != ZENTRAL else "converged"
        st.finished = time.monotonic()

    def _inputs(self) -> str:
        """Zentral's inputs digest now ('' when it cannot be taken: then nothing is current)."""
        if self.zentral_inputs is None:
            return ""
        try:
            return self.zentral_inputs()
        except Exception:  # e.g. an inventory made invalid mid-run: converge, the step reports it
            return ""

    def _zentral_current(self) -> bool:
        """Skip zentral's converge (recorded as skipped) when its ledger entry is current: not
        --force, the last converge at this standard version and backend passed with the inputs
        digest it has now, and its last verify passed."""
        if self.plan.force or self.zentral_inputs is None:
            return False
        inputs = self._inputs()
        if not (
            self.ledger.converged(ZENTRAL, self.version, self.backend, inputs)
            and self.ledger.verified(ZENTRAL, self.version, self.backend)
        ):
            return False
        detail = f"current: converged and verified at standard v{self.version}, inputs {inputs[:12]} unchanged"
        self.ledger.record(
            self.run_id, ZENTRAL, "converge", self.version, _now(), 0.0, "skipped", detail, inputs=inputs
        )
        self.state[ZENTRAL].detail = "converge skipped (" + detail + ")"
        return True

    def _step(self, slug: str, step: str) -> bool:
        """Run one step, record it in the ledger; False (and the site failed) when it failed."""
        st = self.state[slug]
        t0, started = time.monotonic(), _now()
        try:
            self.steps[step](slug)
        except StepUnreachable as e:  # not verified, not failed: counts towards no threshold
            self.ledger.record(
                self.run_id, slug, step, self.version, started, time.monotonic() - t0, "unreachable", e.detail, e.log
            )
            st.result, st.detail, st.finished = "unreachable", f"{step}: {e.detail}", time.monotonic()
            return False
        except StepFailed as e:
            self.ledger.record(
                self.run_id, slug, step, self.version, started, time.monotonic() - t0, "failed", e.detail, e.log
            )
            st.result, st.detail, st.finished = "failed", f"{step}: {e.detail}", time.monotonic()
            return False
        except Exception as e:  # a bug in a step must fail this Kommune, not the others
            self.ledger.record(self.run_id, slug, step, self.version, started, time.monotonic() - t0, "failed", repr(e))
            st.result, st.detail, st.finished = "failed", f"{step}: {e!r}", time.monotonic()
            return False
        # Zentral's converge records what it was made of, taken after it ran (it creates the
        # secrets it applies): the next rollout compares against this.
        inputs = self._inputs() if (slug, step) == (ZENTRAL, "converge") else ""
        self.ledger.record(self.run_id, slug, step, self.version, started, time.monotonic() - t0, "ok", inputs=inputs)
        return True

    def _verify_zentral(self) -> None:
        """Zentral's own checks, once the Kommunen that use its services are through."""
        st = self.state[ZENTRAL]
        if st.result != "converged":
            return
        st.result, st.step = "running", "verify"
        if self._step(ZENTRAL, "verify"):
            st.step, st.result, st.finished = "done", "verified", time.monotonic()
        elif st.result == "failed":
            self.failures += 1

    def run(self) -> bool:
        self.run_id = self.ledger.start_run(self.backend, self.version, list(self.state))
        todo = []
        for slug in self.plan.sites:
            if not self.plan.force and self.ledger.verified(slug, self.version, self.backend):
                st = self.state[slug]
                st.result, st.step, st.detail = "skipped", "done", f"verified at standard v{self.version}"
                self.ledger.record(self.run_id, slug, "verify", self.version, _now(), 0.0, "skipped", st.detail)
            else:
                todo.append(slug)
        if self.plan.include_zentral and (todo or self.plan.force):
            self._do(ZENTRAL)
            if self.state[ZENTRAL].result == "failed":
                self.halted = True
                for s in todo:
                    self.state[s].result = "not started"
                    self.state[s].detail = "zentral failed"
                self.ledger.finish_run(self.run_id, "failed")
                return False
        elif self.plan.include_zentral:
            self.state[ZENTRAL].result, self.state[ZENTRAL].step = "skipped", "done"
        if todo:
            canary, rest = todo[0], todo[1:]
            self._do(canary)
            if self.state[canary].result == "failed":
                self.failures += 1
            if self.failures > self.plan.max_failures or (self.state[canary].result == "failed" and rest):
                # A failed canary stops the wave: the rest would likely fail the same way.
                self.halted = bool(rest)
                rest_todo: list[str] = []
            else:
                rest_todo = rest
            self._pool(rest_todo)
            for s in rest:
                if self.state[s].result == "pending":
                    self.state[s].result = "not started"
                    self.state[s].detail = "wave halted"
        if self.plan.include_zentral:
            self._verify_zentral()
        ok = self.failures == 0 and not self.halted and not self.unreachable
        self.ledger.finish_run(self.run_id, "ok" if ok else ("incomplete" if self.unreachable_only else "failed"))
        return ok

    @property
    def unreachable(self) -> list[str]:
        """Sites whose verify found hosts unreachable (not verified, not failed)."""
        return [s for s, st in self.state.items() if st.result == "unreachable"]

    @property
    def unreachable_only(self) -> bool:
        """Nothing failed and the wave ran through, but some sites were unreachable."""
        return bool(self.unreachable) and self.failures == 0 and not self.halted

    def _pool(self, sites: list[str]) -> None:
        queue = list(sites)
        with ThreadPoolExecutor(max_workers=max(1, self.plan.parallel)) as pool:
            running: dict[Future, str] = {}
            while queue or running:
                while queue and len(running) < self.plan.parallel and not self.halted:
                    slug = queue.pop(0)
                    running[pool.submit(self._do, slug)] = slug
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    slug = running.pop(fut)
                    fut.result()
                    if self.state[slug].result == "failed":
                        self.failures += 1
                        if self.failures > self.plan.max_failures:
                            self.halted = True


# --- presentation --------------------------------------------------------------------------


def _table(rollout: Rollout):
    from rich.table import Table

    t = Table(title=f"basisit rollout (standard v{rollout.version}, backend {rollout.backend})")
    for col in ("site", "step", "elapsed", "result", "detail"):
        t.add_column(col)
    colours = {
        "verified": "green",
        "converged": "green",
        "failed": "red",
        "unreachable": "magenta",
        "running": "yellow",
        "skipped": "cyan",
    }
    for st in rollout.state.values():
        c = colours.get(st.result, "white")
        t.add_row(st.slug, st.step, f"{st.elapsed:6.1f}s", f"[{c}]{st.result}[/{c}]", st.detail)
    return t


def execute(rollout: Rollout, live: bool) -> bool:
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=False)
    if not live:
        ok = rollout.run()
        console.print(_table(rollout))
        return ok
    result: dict[str, bool] = {}
    worker = threading.Thread(target=lambda: result.setdefault("ok", rollout.run()), daemon=True)
    with Live(_table(rollout), console=console, refresh_per_second=2) as lv:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            lv.update(_table(rollout))
        lv.update(_table(rollout))
    return result.get("ok", False)


def cmd_rollout(args: argparse.Namespace) -> int:
    from basisit.cli import EXIT_FAIL, EXIT_OK, UsageError, estate_of, select_sites

    estate = estate_of(args)
    if not (args.kommune or args.wave or args.all):
        raise UsageError("nothing selected; expected --wave W, --kommune SLUG … or --all")
    sites = select_sites(estate, args.kommune, args.wave, args.all)
    if args.parallel < 1 or args.max_failures < 0:
        raise UsageError("--parallel must be >= 1 and --max-failures >= 0")
    state = sitefacts.state_dir(args.state).resolve()
    if args.backend == "lab" and os.geteuid() != 0:
        raise UsageError("the lab backend needs root (it creates containers, bridges and mounts); run as root")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    cmds = Commands(Path(args.inventory).resolve(), state, args.backend, state / "logs" / "rollout" / stamp)
    ledger = Ledger(state / "ledger.sqlite")
    plan = Plan(sites, args.parallel, args.max_failures, args.force)
    ro = Rollout(
        plan,
        {"realise": cmds.realise, "converge": cmds.converge, "verify": cmds.verify},
        ledger,
        estate.standard.version,
        args.backend,
        zentral_inputs=cmds.zentral_inputs,
    )
    print(f"rollout of {len(sites)} Kommune(n) + zentral; logs in {cmds.log_dir}; ledger {ledger.path}", flush=True)
    try:
        ok = execute(ro, live=sys.stdout.isatty() and not os.environ.get("CI"))
    finally:
        ledger.close()
    counts: dict[str, int] = {}
    for st in ro.state.values():
        counts[st.result] = counts.get(st.result, 0) + 1
    print(
        "summary: " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) + (" (wave halted)" if ro.halted else "")
    )
    for slug in ro.unreachable:
        print(
            f"{slug}: not verified, {ro.state[slug].detail} (not a compliance failure; re-run the rollout once they answer)"
        )
    if ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if ro.unreachable_only else EXIT_FAIL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="realise → converge → verify, per Kommune, with a canary and a ledger")
    p.add_argument("--kommune", action="append", metavar="SLUG")
    p.add_argument("--wave", metavar="W")
    p.add_argument("--all", action="store_true")
    p.add_argument("--backend", choices=["lab", "cloud"], default="lab")
    p.add_argument("--parallel", type=int, default=2, metavar="N", help="Kommunen at once after the canary (default 2)")
    p.add_argument(
        "--max-failures", type=int, default=0, metavar="K", help="halt the wave when more than K Kommunen fail"
    )
    p.add_argument("--force", action="store_true", help="redo Kommunen already verified at this standard version")
    p.set_defaults(func=cmd_rollout)
