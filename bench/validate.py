"""Benchmark: `basisit inventory validate`, each case a fresh process (wall time, peak RSS, exit).

Cases:
- shipped:    the shipped inventory (target: <= 1 s);
- big_10mb:   the shipped inventory with one Kommune of 100 000 endpoints (~11 MB, below the
              loader's limit): every endpoint beyond the /23 client zone is reported, so this is
              the worst case of parsing plus reporting ~100 000 errors;
- alias_bomb: a 514-byte "billion laughs" Kommune file (target: refused, exit 2, <= 2 s, <= 200 MB);
- oversized:  a Kommune file one byte over the limit (target: refused before parsing, same bounds).

Peak RSS and CPU seconds come from os.wait4's rusage of that one child; wall seconds are the
median and the minimum of --repeat runs (on a shared machine the CPU seconds and the minimum are
the figures that do not depend on the neighbours; loadavg_1m says how busy it was).
Writes bench/results/validate.json.

    .venv/bin/python bench/validate.py [--repeat N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "validate.json"
BASISIT = [sys.executable, "-m", "basisit.cli"]


def machine() -> dict:
    import yaml

    return describe(pyyaml=yaml.__version__, libyaml=bool(yaml.__with_libyaml__))


def run(inventory: Path, scratch: Path) -> dict:
    """One `basisit inventory validate` in a fresh process: seconds, peak RSS, exit, output size."""
    out, err = scratch / "stdout", scratch / "stderr"
    with out.open("wb") as o, err.open("wb") as e:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [*BASISIT, "--inventory", str(inventory), "inventory", "validate"], stdout=o, stderr=e, cwd=ROOT
        )
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = err.read_text(encoding="utf-8", errors="replace").splitlines()
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit_status": p.returncode,
        "stdout": out.read_text(encoding="utf-8").strip()[:200],
        "error_lines": max(len(lines) - 1, 0),
        "longest_line": max((len(x) for x in lines), default=0),
        "first_error": lines[0][-160:] if lines else "",
        "traceback": any("Traceback" in x for x in lines),
    }


def bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 9):
        prev, cur = chr(96 + n), chr(97 + n)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def big_kommune(endpoints: int) -> str:
    head = (ROOT / "inventory" / "kommunen" / "nalbach.yaml").read_text(encoding="utf-8").split("endpoints:")[0]
    rows = (
        f"  - {{hostname: nal-ws-{i:06d}, index: {i}, asset_tag: NAL-IT-{i:07d}, department: Buergerbuero, os: debian-12}}\n"
        for i in range(1, endpoints + 1)
    )
    return head + "endpoints:\n" + "".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from basisit import load

    results: dict[str, dict] = {}
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="basisit-bench-validate-") as d:
        tmp = Path(d)
        cases: dict[str, tuple[Path, str]] = {"shipped": (ROOT / "inventory", "")}
        for name in ("big_10mb", "alias_bomb", "oversized"):
            inv = tmp / name
            shutil.copytree(ROOT / "inventory", inv)
            path = inv / "kommunen" / "nalbach.yaml"
            if name == "big_10mb":
                path.write_text(big_kommune(100_000), encoding="utf-8")
            elif name == "alias_bomb":
                path.write_text(bomb(), encoding="utf-8")
            else:
                with path.open("ab") as f:
                    f.truncate(load.MAX_BYTES + 1)
            cases[name] = (inv, path.name)
        for name, (inv, fname) in cases.items():
            runs = [run(inv, tmp) for _ in range(args.repeat)]
            secs = [r["seconds"] for r in runs]
            r = dict(runs[-1])
            r["seconds"] = round(statistics.median(secs), 3)
            r["seconds_min"] = min(secs)
            r["seconds_all"] = secs
            r["cpu_seconds"] = round(statistics.median(x["cpu_seconds"] for x in runs), 3)
            r["peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
            if fname:
                r["file_bytes"] = (inv / "kommunen" / fname).stat().st_size
            results[name] = r
            print(
                f"{name:11} {r['seconds']:7.3f} s (min {r['seconds_min']:.3f}, cpu {r['cpu_seconds']:.3f})"
                f"  {r['peak_rss_mib']:7.1f} MiB  exit {r['exit_status']}"
                f"  errors {r['error_lines']}",
                flush=True,
            )
    doc = {
        "benchmark": "basisit inventory validate, one fresh process per run (wall time, peak RSS)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "repeat": args.repeat,
        "limits": {"max_bytes": load.MAX_BYTES, "max_depth": load.MAX_DEPTH, "c_loader": load.C_LOADER},
        "targets": {"shipped_seconds": 1.0, "refusal_seconds": 2.0, "refusal_peak_rss_mib": 200},
        "results": results,
        "machine": machine(),
        "loadavg_1m_before": load_before,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    ok = (
        results["shipped"]["exit_status"] == 0
        and all(results[c]["exit_status"] == 2 and not results[c]["traceback"] for c in ("alias_bomb", "oversized"))
        and results["big_10mb"]["exit_status"] == 2
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
