"""Benchmark: `make lab` (the model wave from nothing to verified) and rollouts at scale.

Runs the real commands in a state directory of its own (default /tmp/basisit-bench/state, so a
developer's `.basisit` is untouched) and merges its figures into bench/results/rollout.json,
one entry per measurement, each with machine and date:

    make_lab_cold     `make lab` with an empty image cache (debootstrap included) and fresh state
    make_lab_warm     `make lab` with the image cached and fresh state (lab down, state removed)
    make_lab_again    `make lab` on the verified wave: every Kommune skipped by the ledger
    rerun_one         `ansible-playbook playbooks/site.yml -l <kommune>` on the converged site:
                      seconds and the changed count from the PLAY RECAP (0 = idempotent)
    scale             `basisit rollout` of a larger selection (--wave W or --kommune …)

Every rollout entry has the per-step seconds from the ledger and the memory of the running lab:
PSS summed over each machine's processes (its cgroup), per host and in total.

    .venv/bin/python bench/rollout.py make_lab_warm rerun_one make_lab_again
    .venv/bin/python bench/rollout.py scale --wave 1 --parallel 2

The lab is one per machine: run it when no other lab (or lab test session) holds the machine.
`--keep` leaves the lab up at the end (for bench/verify.py); by default it is taken down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "rollout.json"
STATE = Path("/tmp/basisit-bench/state")
IMAGES = Path("/tmp/basisit-bench/images")  # kept between runs: only make_lab_cold empties it
RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def machine() -> dict:
    return describe()


def env(state: Path, images: Path = IMAGES) -> dict[str, str]:
    e = dict(os.environ, BASISIT_STATE=str(state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), CI="1")
    e["PATH"] = f"{ROOT / '.venv' / 'bin'}:{e.get('PATH', '')}"
    e["BASISIT_LAB_IMAGES"] = str(images)
    return e


def basisit(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "basisit.cli", "--state", str(state), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env(state), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"basisit {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def fresh(state: Path) -> None:
    """No lab of this state and no state: what a new clone starts from (the image cache aside)."""
    if state.exists():
        basisit(state, "lab", "down", "--all", check=False)
        shutil.rmtree(state)
    state.mkdir(parents=True)


def ledger_steps(state: Path) -> dict:
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        run_id, result = db.execute("SELECT id, result FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        rows = db.execute("SELECT site, step, seconds, result FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,))
        steps: dict[str, dict] = {}
        for site, step, seconds, res in rows:
            steps.setdefault(site, {})[step] = {"seconds": round(seconds or 0.0, 1), "result": res}
        return {"run_result": result, "steps": steps}
    finally:
        db.close()


def memory(state: Path) -> dict:
    """PSS of every running lab machine of this state, summed over its cgroup's processes."""
    from basisit.lab import host, system

    per_host: dict[str, float] = {}
    for _d, rec in host.records(state):
        pss_kib = 0
        for procs in system.cgroup_dir("systemd", rec.group, rec.machine).rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                except OSError:  # the process ended meanwhile
                    continue
                pss_kib += sum(int(ln.split()[1]) for ln in rollup.splitlines() if ln.startswith("Pss:"))
        if pss_kib:
            per_host[rec.host] = round(pss_kib / 1024, 1)
    vals = sorted(per_host.values())
    return {
        "hosts": len(vals),
        "total_mib": round(sum(vals), 1),
        "per_host_mib": {"min": vals[0], "median": vals[len(vals) // 2], "max": vals[-1]} if vals else {},
        "by_host_mib": per_host,
    }


def timed(cmd: list[str], e: dict[str, str], log: Path) -> tuple[int, float, str]:
    t0 = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        p = subprocess.run(cmd, cwd=ROOT, env=e, stdout=fh, stderr=subprocess.STDOUT, text=True)
    return p.returncode, round(time.monotonic() - t0, 1), log.read_text(encoding="utf-8", errors="replace")


def summary_line(out: str) -> str:
    return next((ln for ln in reversed(out.splitlines()) if ln.startswith("summary:")), "")


def make_lab(state: Path, logs: Path, name: str) -> dict:
    rc, secs, out = timed(["make", "lab"], env(state), logs / f"{name}.log")
    return {
        "command": "make lab",
        "exit_status": rc,
        "seconds": secs,
        "summary": summary_line(out),
        **ledger_steps(state),
        "memory": memory(state),
    }


def rerun_one(state: Path, kommune: str, logs: Path) -> dict:
    cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/site.yml", "-l", kommune]
    rc, secs, out = timed(cmd, env(state), logs / f"rerun-{kommune}.log")
    recap = {h: int(c) for h, c, _u, _f in RECAP.findall(out)}
    return {
        "command": f"ansible-playbook playbooks/site.yml -l {kommune}",
        "exit_status": rc,
        "seconds": secs,
        "hosts": len(recap),
        "changed": sum(recap.values()),
        "changed_by_host": recap,
    }


def scale(state: Path, select: list[str], parallel: int, logs: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "basisit.cli",
        "--state",
        str(state),
        "rollout",
        *select,
        "--parallel",
        str(parallel),
        "--max-failures",
        "99",
    ]
    rc, secs, out = timed(cmd, env(state), logs / "scale.log")
    return {
        "command": "basisit rollout " + " ".join(select),
        "parallel": parallel,
        "exit_status": rc,
        "seconds": secs,
        "summary": summary_line(out),
        **ledger_steps(state),
        "memory": memory(state),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "measure", nargs="+", choices=["make_lab_cold", "make_lab_warm", "make_lab_again", "rerun_one", "scale"]
    )
    ap.add_argument("--state", type=Path, default=STATE)
    ap.add_argument(
        "--kommune", action="append", default=[], help="rerun_one: the Kommune (default nalbach); scale: the selection"
    )
    ap.add_argument("--wave", help="scale: the wave to roll out")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument("--note", default="", help="stored with every entry of this invocation")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/rollout.py drives the lab: run it as root")
    state = a.state.resolve()
    logs = Path(tempfile.mkdtemp(prefix="basisit-bench-"))
    doc = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {"benchmark": "rollout", "results": {}}
    base = {"machine": machine()}
    if a.note:
        base["note"] = a.note
    try:
        for m in a.measure:
            started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            print(f"{m} …", flush=True)
            if m == "make_lab_cold":
                fresh(state)
                shutil.rmtree(IMAGES, ignore_errors=True)
                r = make_lab(state, logs, m)
            elif m == "make_lab_warm":
                fresh(state)
                r = make_lab(state, logs, m)
            elif m == "make_lab_again":
                r = make_lab(state, logs, m)
            elif m == "rerun_one":
                r = rerun_one(state, (a.kommune or ["nalbach"])[0], logs)
            else:
                select = ["--wave", a.wave] if a.wave else [x for k in a.kommune for x in ("--kommune", k)]
                if not select:
                    raise SystemExit("scale needs --wave W or --kommune SLUG …")
                r = scale(state, select, a.parallel, logs)
            r["date"] = started
            doc["results"][m] = {**base, **r}
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(
                f"{m}: {r.get('seconds')} s, exit {r.get('exit_status')} {r.get('summary', '')} (log {logs})",
                flush=True,
            )
    finally:
        if not a.keep:
            basisit(state, "lab", "down", "--all", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
