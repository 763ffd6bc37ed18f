"""Benchmark: `ansible-inventory -i inventory --list` for the whole estate, and what it prints.

Every `ansible-playbook` run pays for the inventory before its first task. Writes
bench/results/inventory.json: wall and CPU time of N runs (median, all), the size of the
`--list` output, and the hostvars per host (compact JSON bytes of `_meta.hostvars[host]`, which
includes what the host inherits from its groups): max with its host, median, the hosts above
the 10 KB target, and per variable its largest size, its host and its total over all hosts.

The runs read a fresh, empty state directory (no site facts), so the figures do not depend on
which lab happens to be up; `--state DIR` measures with a real one.

The inventory plugin caches what it adds (inventory/basisit.yml: `cache: true`, in the state
directory, keyed on the content of the inputs and the code): in a fresh state directory the first
run is a miss and the others hits; `--flush-cache` runs measure the miss every time.

Where the time goes: the same number of runs, interleaved with the `--list` runs, of
`ansible-inventory --version` (Python and Ansible start-up), `-i localhost, --list` (Ansible with
an inventory, no plugin), `-i inventory --graph` (the plugin's parse, no hostvars printed) and
`-i inventory --list --flush-cache` (a cache miss); and the same number of `--list` runs in one
instrumented process each, split into start-up, parsing the inventory (Ansible's plugin loading
and the plugin), the hosts' variables and the JSON output (`split`, medians).
The 1-minute load average is sampled before every run. `--before FILE` embeds the headline
figures of an earlier result (e.g. `git show REV:bench/results/inventory.json`) as "before".

    .venv/bin/python bench/inventory.py [--repeat N] [--state DIR] [--before FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import machine as machine_of  # bench/machine.py: bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "inventory.json"
TARGET_SECONDS = 1.0
TARGET_HOSTVARS_BYTES = 10 * 1024


def _compact(v: object) -> int:
    return len(json.dumps(v, separators=(",", ":"), sort_keys=True).encode())


def machine() -> dict:
    from importlib.metadata import version

    return machine_of.describe(ansible_core=version("ansible-core"))


# The comparison runs: what Ansible costs without the plugin, and the plugin without the output.
# (argv, environment): the empty inventory needs Ansible's host_list plugin, which ansible.cfg
# does not enable.
PHASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "version": (["--version"], {}),
    "empty_inventory_list": (["-i", "localhost,", "--list"], {"ANSIBLE_INVENTORY_ENABLED": "host_list"}),
    "graph": (["-i", "inventory", "--graph"], {}),
    "list_flush_cache": (["-i", "inventory", "--list", "--flush-cache"], {}),
}

# One `--list` in-process, timed per phase; the figures go to the file named by argv[1].
SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import ansible.cli.inventory as ci
from ansible.inventory import manager as im
out, spent = sys.argv[1], {}
def timed(owner, name, label):
    f = getattr(owner, name)
    static = isinstance(owner.__dict__[name], staticmethod)
    def w(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, staticmethod(w) if static else w)
timed(im.InventoryManager, "parse_sources", "parse")
timed(ci.InventoryCLI, "json_inventory", "hostvars")
timed(ci.InventoryCLI, "dump", "json_output")
spent["startup"] = time.perf_counter() - t0
sys.argv = ["ansible-inventory", "-i", "inventory", "--list"]
try:
    ci.main()
finally:
    spent["total"] = time.perf_counter() - t0
    with open(out, "w") as fh:
        json.dump(spent, fh)
"""


def split_once(state: Path) -> dict[str, float]:
    """One instrumented `--list` (a fresh process): seconds per phase."""
    env = dict(os.environ, BASISIT_STATE=str(state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-c", SPLIT, fh.name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return json.loads(Path(fh.name).read_text(encoding="utf-8"))


def run_once(state: Path, args: list[str] | None = None, extra_env: dict | None = None) -> tuple[float, float, bytes]:
    """One `ansible-inventory` (default `-i inventory --list`): (wall s, CPU s of the child, stdout)."""
    env = dict(os.environ, BASISIT_STATE=str(state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), **(extra_env or {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-inventory"), *(args or ["-i", "inventory", "--list"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise SystemExit(f"ansible-inventory failed (exit {proc.returncode})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def describe(listing: dict) -> dict:
    """Sizes of the hostvars: per host and per variable."""
    hostvars: dict[str, dict] = listing["_meta"]["hostvars"]
    per_host = {h: _compact(v) for h, v in hostvars.items()}
    biggest = max(per_host, key=lambda h: per_host[h])
    by_var: dict[str, dict] = defaultdict(lambda: {"max_bytes": 0, "host": "", "total_bytes": 0, "hosts": 0})
    for h, hv in hostvars.items():
        for k, v in hv.items():
            n = _compact(v)
            e = by_var[k]
            e["total_bytes"] += n
            e["hosts"] += 1
            if n > e["max_bytes"]:
                e["max_bytes"], e["host"] = n, h
    top = sorted(per_host.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "hosts": len(hostvars),
        "groups": len([g for g in listing if g != "_meta"]),
        "hostvars_bytes": {
            "max": per_host[biggest],
            "max_host": biggest,
            "median": statistics.median(per_host.values()),
            "total": sum(per_host.values()),
            "largest_hosts": dict(top[:8]),
            "hosts_over_target": sum(1 for n in per_host.values() if n > TARGET_HOSTVARS_BYTES),
            "biggest_host_by_var": dict(
                sorted(((k, _compact(v)) for k, v in hostvars[biggest].items()), key=lambda kv: -kv[1])
            ),
        },
        "by_var": dict(sorted(by_var.items(), key=lambda kv: -kv[1]["total_bytes"])),
    }


def yaml_c_loader() -> bool:
    """Whether basisit reads YAML with libyaml's parser (basisit.load)."""
    sys.path.insert(0, str(ROOT))
    from basisit import load

    return load.C_LOADER


def headline(result: dict) -> dict:
    """The figures of a result that a before/after comparison names."""
    hb = result["hostvars_bytes"]
    return {
        "date": result["date"],
        "seconds_median": result["seconds_median"],
        "cpu_seconds_median": result["cpu_seconds_median"],
        "output_bytes": result["output_bytes"],
        "hostvars_bytes_max": hb["max"],
        "hostvars_bytes_max_host": hb["max_host"],
        "hostvars_bytes_median": hb["median"],
        "loadavg_1m": result.get("machine", {}).get("loadavg_1m"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs to time (default 5)")
    ap.add_argument("--state", type=Path, help="state directory to read site facts from (default: a fresh, empty one)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="a note shown under the benchmark table")
    ap.add_argument("--before", type=Path, help="an earlier inventory.json whose figures are kept as 'before'")
    args = ap.parse_args()

    walls, cpus, outputs, loads = [], [], set(), []
    phases: dict[str, dict[str, list]] = {name: {"wall": [], "cpu": []} for name in PHASES}
    splits: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="basisit-bench-inventory-") as tmp:
        state = args.state.resolve() if args.state else Path(tmp)
        for _ in range(args.repeat):
            loads.append(round(os.getloadavg()[0], 2))
            wall, cpu, out = run_once(state)
            walls.append(wall)
            cpus.append(cpu)
            outputs.add(out)
            for name, (argv, extra_env) in PHASES.items():
                w, c, flushed = run_once(state, argv, extra_env)
                phases[name]["wall"].append(w)
                phases[name]["cpu"].append(c)
                if name == "list_flush_cache":
                    outputs.add(flushed)  # the miss prints what the hits print
            splits.append(split_once(state))
    if len(outputs) != 1:
        raise SystemExit("ansible-inventory --list printed different output on two runs (a hit and a miss?)")
    out = outputs.pop()
    listing = json.loads(out)
    desc = describe(listing)
    doc = {
        "benchmark": "ansible-inventory -i inventory --list for the whole estate, one fresh process per run",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "state": "given" if args.state else "empty (no site facts)",
        "repeat": args.repeat,
        "targets": {"seconds_median": TARGET_SECONDS, "hostvars_bytes_per_host": TARGET_HOSTVARS_BYTES},
        "seconds_median": round(statistics.median(walls), 3),
        "seconds_all": [round(w, 3) for w in walls],
        "cpu_seconds_median": round(statistics.median(cpus), 3),
        "cpu_seconds_all": [round(c, 3) for c in cpus],
        "output_bytes": len(out),
        **desc,
        "machine": machine(),
    }
    doc["loadavg_1m_during"] = loads
    doc["phases"] = {
        name: {
            "command": "ansible-inventory " + " ".join(PHASES[name][0]),
            "seconds_median": round(statistics.median(v["wall"]), 3),
            "cpu_seconds_median": round(statistics.median(v["cpu"]), 3),
        }
        for name, v in phases.items()
    }
    doc["split_seconds_median"] = {k: round(statistics.median(s[k] for s in splits), 3) for k in splits[0]}
    doc["first_run_seconds"] = doc["seconds_all"][0]  # a fresh state directory: the cache miss
    doc["yaml_c_loader"] = yaml_c_loader()
    if args.before:
        doc["before"] = headline(json.loads(args.before.read_text(encoding="utf-8")))
    if args.note:
        doc["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    hb = desc["hostvars_bytes"]
    print(
        f"ansible-inventory --list: median {doc['seconds_median']} s wall, {doc['cpu_seconds_median']} s CPU; "
        f"{len(out) / 1e6:.1f} MB for {desc['hosts']} hosts; hostvars max {hb['max'] / 1024:.1f} KB "
        f"({hb['max_host']}), median {hb['median'] / 1024:.1f} KB -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
