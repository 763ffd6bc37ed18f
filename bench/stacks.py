"""Benchmark: mock-run every Pulumi stack (52 Kommunen + zentral) in one process.

Writes bench/results/stacks.json: wall and CPU time of the whole run (CPU time stays
comparable when other work shares the machine), per-stack times, resources per stack by size
class (total and by type), machine, load and date. No engine, no provider plugin:
the programs run under pulumi.runtime.set_mocks (basisit.cloud.mockrun).

    .venv/bin/python bench/stacks.py [--repeat N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

from machine import describe  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "stacks.json"


def machine() -> dict:
    return describe(
        platform=platform.platform(), pulumi=version("pulumi"), pulumi_openstack=version("pulumi-openstack")
    )


def commit() -> str | None:
    """The checked-out commit (with `+` when the work tree differs), or None outside a repository."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "basisit", "bench"]).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="full runs to time (default 1)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="a note shown under the benchmark table")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from basisit.cloud import config as cloud_config
    from basisit.cloud import mockrun
    from basisit.validate import load_estate

    estate = load_estate(ROOT / "inventory")
    import_s = time.perf_counter() - t0

    walls: list[float] = []
    cpus: list[float] = []
    per_stack: dict[str, float] = {}
    runs: dict[str, mockrun.StackRun] = {}
    for _ in range(args.repeat):
        start, cpu = time.perf_counter(), time.process_time()
        for site in cloud_config.all_sites(estate):
            s = time.perf_counter()
            runs[site.slug] = mockrun.run_site(estate, site)
            per_stack[site.slug] = round(time.perf_counter() - s, 4)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)

    classes: dict[str, list[str]] = defaultdict(list)
    for slug in runs:
        site = estate.site(slug)
        classes["zentral" if site.is_zentral else str(site.size)].append(slug)
    by_class = {}
    for key in ("S", "M", "L", "zentral"):
        slugs = classes.get(key, [])
        if not slugs:
            continue
        counts = sorted({len(runs[s].resources) for s in slugs})
        types = Counter(r.typ for r in runs[slugs[0]].resources)
        by_class[key] = {
            "stacks": len(slugs),
            "resources_per_stack": counts[0] if len(counts) == 1 else counts,
            "servers_per_stack": len(runs[slugs[0]].of_type("openstack:compute/instance:Instance")),
            "by_type": dict(sorted(types.items())),
            "example": slugs[0],
        }
    total = sum(len(r.resources) for r in runs.values())
    doc = {
        "benchmark": "mock-run of every Pulumi stack (52 Kommunen + zentral) in one process",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "stacks": len(runs),
        "resources_total": total,
        "repeat": args.repeat,
        "wall_seconds": round(min(walls), 3),
        "wall_seconds_all": [round(w, 3) for w in walls],
        "wall_seconds_median": round(statistics.median(walls), 3),
        "cpu_seconds": round(min(cpus), 3),
        "cpu_seconds_all": [round(c, 3) for c in cpus],
        "import_and_model_seconds": round(import_s, 3),
        "per_stack_seconds": {"mean": round(statistics.mean(per_stack.values()), 4), "max": max(per_stack.values())},
        "per_stack_seconds_by_stack": per_stack,
        "by_size_class": by_class,
        "resources_by_stack": {slug: len(r.resources) for slug, r in runs.items()},
        "machine": machine(),
    }
    if args.note:
        doc["note"] = args.note
    # The run this one replaces, so that a change's before and after stay side by side.
    prev = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    keep = ("date", "commit", "resources_total", "wall_seconds", "cpu_seconds", "note")
    if prev:
        doc["previous"] = {k: prev[k] for k in keep if prev.get(k) is not None}
        doc["previous"]["loadavg_1m"] = prev.get("machine", {}).get("loadavg_1m")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    sizes = ", ".join(f"{k}: {v['resources_per_stack']}" for k, v in by_class.items())
    print(
        f"{len(runs)} stacks, {total} resources, {doc['wall_seconds']} s wall, {doc['cpu_seconds']} s CPU ({sizes})"
        f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
