"""Benchmark: throughput of `basisit verify` against a running lab.

Writes bench/results/verify.json: for one Kommune and for the realised Kommunen of a wave (the
model wave by default), the wall time of the whole run (probe included), the number of checks
and checks per second, per job count; whether the sites were converged (the pass share says
so), machine and date. The lab's site facts and secrets are copied to a scratch state directory,
so the lab's own state (history, reports) is not touched. Read-only on the hosts.

    .venv/bin/python bench/verify.py --state LAB_STATE [--kommune nalbach] [--wave modell] [--jobs 2 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "verify.json"


def machine() -> dict:
    return describe()


def run(state: Path, select: list[str], jobs: int) -> dict:
    cmd = [sys.executable, "-m", "basisit.cli", "--state", str(state), "verify", *select, "--jobs", str(jobs)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    latest = sorted((state / "reports" / "runs").iterdir())[-1]
    doc = json.loads((latest / "results.json").read_text(encoding="utf-8"))
    s, r = doc["summary"], doc["run"]
    return {
        "selection": r["selection"],
        "jobs": jobs,
        "exit_status": p.returncode,
        "hosts": len(r["hosts"]),
        "checks": s["total"],
        "pass": s["pass"],
        "fail": s["fail"],
        "na": s["na"],
        "gated": len(r["gated"]),
        "seconds": r["duration"],
        "probe_seconds": r["probe_seconds"],
        "checks_per_second": round(s["total"] / r["duration"], 2) if r["duration"] else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path, help="the running lab's state directory (site facts)")
    ap.add_argument("--kommune", default="nalbach")
    ap.add_argument("--wave", default="modell")
    ap.add_argument("--jobs", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    facts = args.state / "facts"
    if not any(facts.glob("*.json")):
        print(f"bench/verify.py: no site facts in {facts}; bring a lab up first (basisit lab up)", file=sys.stderr)
        return 2
    from basisit.validate import load_estate

    estate = load_estate(ROOT / "inventory")
    wave = [s.slug for s in estate.wave(args.wave) if (facts / f"{s.slug}.json").exists()]
    results: dict = {"one_kommune": [], "one_kommune_and_zentral": [], "wave_runs": []}
    with tempfile.TemporaryDirectory(prefix="basisit-bench-verify-") as tmp:
        state = Path(tmp)
        shutil.copytree(facts, state / "facts")
        if (args.state / "secrets").is_dir():  # the identity check logs in with the probe secret
            shutil.copytree(args.state / "secrets", state / "secrets")
        for jobs in args.jobs:
            results["one_kommune"].append(run(state, ["--kommune", args.kommune], jobs))
            if (facts / "zentral.json").exists():
                results["one_kommune_and_zentral"].append(run(state, ["--kommune", args.kommune, "--zentral"], jobs))
            if len(wave) > 1:
                results["wave_runs"].append(run(state, [a for s in wave for a in ("--kommune", s)], jobs))
    doc = {
        "benchmark": "basisit verify",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "kommune": args.kommune,
        "wave": args.wave,
        "wave_realised": wave,
        "note": "a site whose pass share is low was not converged; times still measure the check engine",
        **results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    for k in results:
        for r in results[k]:
            print(
                f"{k}: {r['selection']} jobs={r['jobs']}: {r['checks']} checks in {r['seconds']} s = {r['checks_per_second']}/s"
            )
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
