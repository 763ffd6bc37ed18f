"""Benchmark: RTO of a lost domain controller in the lab — from "DC gone" to "verify passes".

On a lab that is up and converged (the lab tests' session lab, or a developer's), with a backup
of the DC in zentral's repository: the DC's machine is destroyed (`basisit lab destroy`: stopped,
its disk thrown away), then `basisit restore --kommune K --host H` recreates it from the golden
image, restores the domain from the newest snapshot, converges the Kommune and runs
`basisit verify --kommune K`. The RTO is the wall time from the end of the destroy to the end of
the restore (its steps: recreate; restore with the Kommune's converge; verify); the target is 5 minutes.

    .venv/bin/python bench/restore.py --state /tmp/basisit-labtest/state [--kommune nalbach --host dc1]

tests/lab/test_restore.py measures the same way on the lab tests' session lab and records its
figure with `record()` when BASISIT_RESTORE_RESULTS names a file:

    BASISIT_RESTORE_RESULTS=bench/results/restore-lab.json pytest -m lab tests/lab/test_converge.py tests/lab/test_restore.py

Results: bench/results/restore-<name>.json; then bench/report.py. The lab is one per machine: run
it when no other lab holds the machine (the lab turn lock).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import machine  # noqa: E402 - bench/machine.py, found through the sys.path entries just above

TARGET_SECONDS = 300
RESULTS_ENV = "BASISIT_RESTORE_RESULTS"


def result_doc(restore_doc: dict, rto_seconds: float, note: str = "") -> dict:
    """The bench record: the measured RTO, the restore's steps, the machine and its load."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "kommune": restore_doc["kommune"],
        "host": restore_doc["host"],
        "backend": restore_doc["backend"],
        "rto_seconds": round(rto_seconds, 1),
        "target_seconds": TARGET_SECONDS,
        "steps": {s["name"]: {"seconds": s["seconds"], "result": s["result"]} for s in restore_doc["steps"]},
        "result": restore_doc["result"],
        "note": note,
    }


def record(doc: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def _cli(state: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(ROOT / "inventory"), "--state", str(state)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)


def measure(state: Path, kommune: str, host: str) -> tuple[dict, float]:
    """Destroy the DC, restore it; (restore.json, RTO seconds). Raises on a failed step."""
    p = _cli(state, "lab", "destroy", "--kommune", kommune, "--host", host, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"lab destroy failed: {p.stderr.strip()}")
    gone = time.monotonic()
    p = _cli(state, "restore", "--kommune", kommune, "--host", host, "--json", timeout=7200)
    rto = time.monotonic() - gone
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise SystemExit(f"restore exited {p.returncode} without its JSON: {p.stderr.strip()[-800:]}") from None
    return doc, rto


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, required=True, help="the state directory of an up, converged lab")
    ap.add_argument("--kommune", default="nalbach")
    ap.add_argument("--host", default="dc1")
    ap.add_argument("--name", default="lab", help="results file bench/results/restore-NAME.json")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    doc, rto = measure(a.state, a.kommune, a.host)
    out = record(result_doc(doc, rto, a.note), ROOT / "bench" / "results" / f"restore-{a.name}.json")
    print(f"RTO {rto:.1f} s ({doc['result']}); {out}")
    return 0 if doc["result"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
