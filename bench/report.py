"""Write docs/benchmarks.md from the JSON results in bench/results/ (never by hand).

    .venv/bin/python bench/report.py            # write docs/benchmarks.md
    .venv/bin/python bench/report.py --check    # exit 1 when docs/benchmarks.md is out of date

Every figure in the table comes from a result file; a measurement that has not been run says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def _inventory_phases(i: dict) -> str:
    """Where the time goes: Ansible alone, the plugin without printing, as medians (wall / CPU)."""
    ph = i.get("phases")
    if not ph:
        return ""
    names = {
        "version": "`--version`",
        "empty_inventory_list": "`-i localhost, --list`",
        "graph": "`--graph` (plugin, no hostvars printed)",
        "list_flush_cache": "`--list --flush-cache` (a cache miss: the model loaded)",
    }
    parts = [
        f"{label} {ph[k]['seconds_median']:.2f} s ({ph[k]['cpu_seconds_median']:.2f} s CPU)"
        for k, label in names.items()
        if k in ph
    ]
    split = i.get("split_seconds_median")
    if split:
        labels = {
            "startup": "start-up",
            "parse": "inventory parse (Ansible's plugin loading + the plugin)",
            "hostvars": "hosts' variables",
            "json_output": "JSON output",
        }
        parts.append(
            "one `--list` split in-process: "
            + ", ".join(f"{label} {split[k]:.2f} s" for k, label in labels.items() if k in split)
        )
    return "; ".join(parts) + "; "


def _inventory_load(i: dict) -> str:
    during = i.get("loadavg_1m_during")
    if during:
        return f"{min(during):.1f}-{max(during):.1f} during the runs"
    return f"{i['machine'].get('loadavg_1m', 0):.1f}"


def _inventory_before(i: dict) -> str:
    b = i.get("before")
    if not b:
        return ""
    return (
        f"; before ({_date(b['date'])}): {b['seconds_median']:.1f} s, {b['cpu_seconds_median']:.1f} s CPU, "
        f"output {b['output_bytes'] / 1e6:.1f} MB, hostvars max {b['hostvars_bytes_max'] / 1024:.1f} KB "
        f"({b['hostvars_bytes_max_host']}), median {b['hostvars_bytes_median'] / 1024:.1f} KB, "
        f"load {b.get('loadavg_1m') or 0:.1f}"
    )


def _load(name: str) -> dict:
    p = RESULTS / name
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def _machine(m: dict) -> str:
    if not m:
        return "?"
    mem = f", {m['mem_gib']} GiB" if "mem_gib" in m else ""
    return f"{m.get('cpus', '?')} × {m.get('cpu', '?')}{mem}"


def _date(s: str) -> str:
    return s[:16].replace("T", " ") + " UTC" if s else "?"


def _steps(r: dict) -> str:
    """Per site: the seconds of converge (incl. restore drill) and verify from the ledger."""
    parts = []
    for site, steps in r.get("steps", {}).items():
        conv, ver = steps.get("converge", {}), steps.get("verify", {})
        if conv or ver:
            bits = []
            if conv:
                bits.append(f"converge {conv['seconds']:.0f} s{'' if conv['result'] == 'ok' else ' ' + conv['result']}")
            if ver:
                bits.append(f"verify {ver['seconds']:.0f} s{'' if ver['result'] == 'ok' else ' ' + ver['result']}")
            parts.append(f"{site}: " + ", ".join(bits))
    return "; ".join(parts)


def _mem(r: dict) -> str:
    m = r.get("memory") or {}
    if not m.get("hosts"):
        return ""
    ph = m["per_host_mib"]
    return (
        f"{m['hosts']} hosts, {m['total_mib'] / 1024:.2f} GiB PSS "
        f"(per host median {ph['median']:.0f} MiB, max {ph['max']:.0f} MiB)"
    )


Row = tuple[str, str, str, str, str]  # (what, figure, detail, machine, date)


def rows() -> list[Row]:
    """(what, figure, detail, machine, date), in the order of the table."""
    rollout = _load("rollout.json").get("results", {})
    return [
        *_lab_rows(rollout),
        *_verify_rows(),
        *_stacks_rows(),
        *_validate_rows(),
        *_inventory_rows(),
        *_hardening_rows(),
        *_scale_rows(rollout),
        *_restore_rows(),
    ]


def _lab_rows(ro: dict) -> list[Row]:
    """`make lab` cold, warm and again; the idempotent re-run of one Kommune."""
    out: list[Row] = []
    labels = {
        "make_lab_cold": "`make lab`, cold (image built, fresh state)",
        "make_lab_warm": "`make lab`, warm (image cached, fresh state)",
        "make_lab_again": "`make lab` again (wave verified: ledger skips)",
    }
    for key, label in labels.items():
        r = ro.get(key)
        if not r:
            out.append((label, "not measured", "", "", ""))
            continue
        detail = "; ".join(x for x in (r.get("summary", ""), _steps(r), _mem(r)) if x)
        fig = f"{r['seconds']:.0f} s" + ("" if r["exit_status"] == 0 else f" (exit {r['exit_status']})")
        out.append((label, fig, detail, _machine(r.get("machine", {})), _date(r.get("date", ""))))
    r = ro.get("rerun_one")
    if r:
        out.append(
            (
                f"idempotent re-run, `{r['command']}`",
                f"{r['seconds']:.0f} s",
                f"{r['hosts']} hosts, changed={r['changed']}",
                _machine(r.get("machine", {})),
                _date(r.get("date", "")),
            )
        )
    else:
        out.append(("idempotent re-run of one Kommune", "not measured", "", "", ""))
    return out


def _verify_rows() -> list[Row]:
    """`basisit verify`: one Kommune, with zentral, a wave."""
    out: list[Row] = []
    v = _load("verify.json")
    labels = {"one_kommune": "verify, one Kommune", "one_kommune_and_zentral": "verify, Kommune + zentral"}
    labels["wave_runs"] = "verify, wave"
    for key, label in labels.items():
        for r in v.get(key) or []:
            out.append(
                (
                    f"{label} ({', '.join(r['selection'])}, --jobs {r['jobs']})",
                    f"{r['checks_per_second']:.1f} checks/s",
                    f"{r['checks']} checks ({r['pass']} pass, {r['fail']} fail, {r['na']} n/a) on {r['hosts']} hosts "
                    f"in {r['seconds']:.1f} s",
                    _machine(v.get("machine", {})),
                    _date(v.get("date", "")),
                )
            )
    return out


def _stacks_rows() -> list[Row]:
    """The Pulumi mock run of every stack."""
    out: list[Row] = []
    s = _load("stacks.json")
    if s:
        cpu = f"{s['cpu_seconds']:.1f} s CPU; " if "cpu_seconds" in s else ""
        if s.get("repeat", 1) > 1:
            cpu = f"best of {s['repeat']}, median {s['wall_seconds_median']:.1f} s; " + cpu
        load = s.get("machine", {}).get("loadavg_1m")
        prev = s.get("previous") or {}
        was = (
            f"; the run before: {prev['wall_seconds']:.1f} s"
            + (f", {prev['cpu_seconds']:.1f} s CPU" if "cpu_seconds" in prev else "")
            + f" ({prev.get('commit') or prev.get('note') or '?'}, {_date(prev.get('date', ''))})"
            if prev.get("wall_seconds")
            else ""
        )
        out.append(
            (
                f"Pulumi mock run, {s['stacks']} stacks in one process",
                f"{s['wall_seconds']:.1f} s",
                f"{cpu}{s['resources_total']} resources; per stack mean {s['per_stack_seconds']['mean']:.2f} s, "
                f"max {s['per_stack_seconds']['max']:.2f} s" + (f"; load {load:.1f}" if load is not None else "") + was,
                _machine(s.get("machine", {})),
                _date(s.get("date", "")),
            )
        )
    return out


def _validate_rows() -> list[Row]:
    """`basisit inventory validate`: the shipped inventory and hostile input."""
    out: list[Row] = []
    va = _load("validate.json")
    labels = {
        "shipped": "`basisit inventory validate`, the shipped inventory",
        "big_10mb": "validate refuses a 10 MB Kommune file",
        "alias_bomb": "validate refuses a YAML alias bomb",
        "oversized": "validate refuses a file over the size limit",
    }
    for key, label in labels.items():
        r = (va.get("results") or {}).get(key)
        if not r:
            continue
        size = f"{r['file_bytes'] / 1e6:.1f} MB file; " if r.get("file_bytes", 0) > 1e6 else ""
        n = r.get("error_lines", 0)
        errors = f"{n} error line{'' if n == 1 else 's'}; " if n else ""
        out.append(
            (
                f"{label} (median of {va.get('repeat', '?')})",
                f"{r['seconds']:.1f} s",
                f"{r['cpu_seconds']:.2f} s CPU; {size}peak RSS {r['peak_rss_mib']:.0f} MiB; {errors}"
                f"exit {r['exit_status']}; load {va.get('machine', {}).get('loadavg_1m', 0):.1f}",
                _machine(va.get("machine", {})),
                _date(va.get("date", "")),
            )
        )
    return out


def _inventory_rows() -> list[Row]:
    """`ansible-inventory --list` through the plugin."""
    out: list[Row] = []
    i = _load("inventory.json")
    if i:
        hb = i["hostvars_bytes"]
        out.append(
            (
                f"`ansible-inventory -i inventory --list`, {i['hosts']} hosts (median of {i['repeat']})",
                f"{i['seconds_median']:.1f} s",
                f"{i['cpu_seconds_median']:.1f} s CPU; output {i['output_bytes'] / 1e6:.1f} MB; hostvars per host "
                f"max {hb['max'] / 1024:.1f} KB ({hb['max_host']}), median {hb['median'] / 1024:.1f} KB, "
                f"{hb['hosts_over_target']} hosts over {i['targets']['hostvars_bytes_per_host'] / 1024:.0f} KB; "
                f"{_inventory_phases(i)}load {_inventory_load(i)}{_inventory_before(i)}",
                _machine(i.get("machine", {})),
                _date(i.get("date", "")),
            )
        )
    else:
        out.append(("`ansible-inventory -i inventory --list`", "not measured", "", "", ""))
    return out


def _scale_rows(ro: dict) -> list[Row]:
    """A rollout of a larger selection."""
    out: list[Row] = []
    r = ro.get("scale")
    if r:
        detail = "; ".join(x for x in (r.get("summary", ""), _mem(r)) if x)
        out.append(
            (
                f"scale run, `{r['command']}` (--parallel {r['parallel']})",
                f"{r['seconds']:.0f} s",
                detail,
                _machine(r.get("machine", {})),
                _date(r.get("date", "")),
            )
        )
    else:
        out.append(("scale run", "not measured", "", "", ""))
    return out


def _restore_rows() -> list[Row]:
    """RTO of a lost DC (bench/restore.py, tests/lab/test_restore.py): destroyed to verified."""
    out: list[Row] = []
    for p in sorted(RESULTS.glob("restore-*.json")):
        r = json.loads(p.read_text(encoding="utf-8"))
        steps = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in r.get("steps", {}).items())
        met = "met" if r["rto_seconds"] <= r["target_seconds"] and r["result"] == "ok" else "missed"
        out.append(
            (
                f"RTO of a lost DC ({r['kommune']} {r['host']}, {r['backend']}: destroyed to verified)",
                f"{r['rto_seconds']:.0f} s",
                f"target {r['target_seconds']} s {met}; result {r['result']}; {steps}"
                + (f"; load {r['machine']['loadavg_1m']}" if "loadavg_1m" in r.get("machine", {}) else ""),
                _machine(r.get("machine", {})),
                _date(r.get("date", "")),
            )
        )
    if not out:
        out.append(("RTO of a lost DC", "not measured", "bench/restore.py", "", ""))
    return out


def _hardening_rows() -> list[Row]:
    h = _load("hardening.json")
    out = []
    for phase in ("before", "after"):
        r = h.get(phase)
        label = f"Lynis hardening index, {h.get('kommune', '?')} + zentral, {phase}"
        if not r:
            out.append((label, "not measured", "", "", ""))
            continue
        hosts = "; ".join(
            f"{n}: {x['hardening_index']} ({len(x['warnings'])} warning{'' if len(x['warnings']) == 1 else 's'})"
            if "hardening_index" in x
            else f"{n}: {x.get('error', '?')}"
            for n, x in r["hosts"].items()
        )
        conv = r["converge"]
        below = r["hosts_below_target"]
        detail = (
            f"{r['commit']}; converge exit {conv['exit_status']}, {conv['seconds']:.0f} s; {hosts}; "
            + (f"below {h['target']}: {', '.join(below)}" if below else f"every host >= {h['target']}")
            + (f"; {r['note']}" if r.get("note") else "")
        )
        fig = f"min {r['index_min']}" if r.get("index_min") is not None else "no report"
        out.append((label, fig, detail, _machine(r.get("machine", {})), _date(r.get("date", ""))))
    return out


def _hardening_section() -> list[str]:
    """What Lynis still says after the fixes: warnings and suggestions per host, and the waivers."""
    h = _load("hardening.json")
    r = h.get("after")
    if not r:
        return []
    lines = ["", "## Lynis after the fixes: what remains", ""]
    lines += [
        f"`bench/hardening.py`, Lynis {next(iter(r['hosts'].values())).get('lynis_version', '?')} "
        f"(`lynis audit system --quick`), target {h['target']} on every host. A finding that occurs on "
        "every host is listed once under `all`.",
        "",
        "| host | index | warnings | suggestions (test ids) |",
        "|---|---|---|---|",
    ]
    hosts = {n: x for n, x in r["hosts"].items() if "hardening_index" in x}
    common = set.intersection(*({s["id"] for s in x["suggestions"]} for x in hosts.values())) if hosts else set()
    if common:
        lines.append(f"| all | | | {', '.join(sorted(common))} |")
    for n, x in hosts.items():
        warn = ", ".join(f"{w['id']} {w['text']}" for w in x["warnings"]) or "none"
        sugg = ", ".join(sorted({s["id"] for s in x["suggestions"]} - common))
        lines.append(f"| {n} | {x['hardening_index']} | {warn.replace('|', '/')} | {sugg} |")
    waivers = h.get("waivers") or {}
    if waivers:
        lines += ["", "Waived (`bench/lynis/custom.prf`, skipped by Lynis, counted neither way):", ""]
        by_reason: dict[str, list[str]] = {}
        for tid, why in waivers.items():
            by_reason.setdefault(why, []).append(tid)
        lines += [f"- {', '.join(ids)}: {why}" for why, ids in by_reason.items()]
    return lines


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from `bench/results/*.json`; do not edit by hand. Each figure",
        "names the machine and the date it was measured on. The scripts that produce the results:",
        "",
        "- `bench/rollout.py`: `make lab` cold / warm / again, the idempotent re-run of one Kommune,",
        "  scale runs; memory is PSS summed over each lab machine's processes.",
        "- `bench/verify.py`: `basisit verify` throughput on a converged lab.",
        "- `bench/stacks.py`: every Pulumi program run with the engine's mocks.",
        "- `bench/validate.py`: `basisit inventory validate` on the shipped inventory and on hostile input.",
        "- `bench/inventory.py`: `ansible-inventory --list` of the estate (what every playbook pays before",
        "  its first task) and the size of the hostvars it carries.",
        "- `bench/hardening.py`: Lynis in every role's host of a converged lab (nalbach + zentral),",
        "  hardening index and warnings per host, before and after the hardening fixes.",
        "- `bench/restore.py`: RTO of a lost domain controller in the lab (`basisit lab destroy`, then",
        "  `basisit restore` until `basisit verify` passes); tests/lab/test_restore.py records it too.",
        "",
        "| what | figure | detail | machine | date |",
        "|---|---|---|---|---|",
    ]
    for r in rows():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    notes = [
        n
        for n in (_load(f).get("note") for f in ("verify.json", "stacks.json", "validate.json", "inventory.json"))
        if n
    ]
    notes += [f"{k}: {r['note']}" for k, r in (_load("rollout.json").get("results") or {}).items() if r.get("note")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += _hardening_section()
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    text = render()
    if a.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run .venv/bin/python bench/report.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
