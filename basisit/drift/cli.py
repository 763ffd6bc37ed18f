"""`basisit drift`: the converge in check mode with diff, against the current model.

    basisit drift [--kommune SLUG …|--wave W|--all] [--zentral] [--parallel N]

Per site, `ansible-playbook playbooks/site.yml -l <slug> --check --diff` (the converge a rollout
runs) with the drift recorder (plugins/callback/basisit_drift.py) as its output: every task that
would change is recorded per host with its resource (file, unit, user, …) and its diff, redacted
(basisit/drift/redact.py). Handlers are left out (they only follow a changed task). The run
writes `<state>/reports/drift/<run id>/{drift.json,<site>.log}`, appends to
`<state>/history.sqlite` (tables drift_runs, drift_kommunen, drift_changes) and renders the
dashboard.

Exit status: 0 nothing drifted, 1 something drifted (or a task failed, or a run did not
complete), 2 bad input, 3 nothing drifted but hosts were unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from basisit import sitefacts
from basisit.cli import EXIT_FAIL, EXIT_INPUT, EXIT_OK, UsageError, add_site_selection, estate_of, select_sites
from basisit.drift import redact

ROOT = Path(__file__).resolve().parent.parent.parent
PLAYBOOK = ROOT / "playbooks" / "site.yml"
CALLBACKS = ROOT / "plugins" / "callback"
EXIT_UNREACHABLE = 3
ZENTRAL = "zentral"
TIMEOUT = 3600
ITEM_FIELDS = ("host", "task", "role", "action", "resource", "item", "no_log", "diff")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drift",
        help="what a converge would change on realised Kommunen (check mode with diff): JSON, history, dashboard",
        description=__doc__.split("\n\n")[0],
    )
    add_site_selection(p, "check for drift")
    p.add_argument("--parallel", type=int, default=2, metavar="N", help="sites checked at once (default 2)")
    p.add_argument("--no-dashboard", action="store_true", help="skip rendering the dashboard")
    p.add_argument(
        "--cloud",
        action="store_true",
        help="the cloud tenants instead of the hosts: a dry-run Pulumi refresh per stack (basisit/drift/cloud.py)",
    )
    p.add_argument("--timeout", type=int, default=TIMEOUT, help=argparse.SUPPRESS)
    # Tests run their own playbook against their own Ansible inventory; the product runs site.yml.
    p.add_argument("--playbook", type=Path, default=PLAYBOOK, help=argparse.SUPPRESS)
    p.add_argument("--ansible-inventory", type=Path, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_drift)


@dataclass
class Runner:
    """Runs the check-mode converge of one site and reads the recorder's records."""

    playbook: Path
    ansible_inventory: Path
    inventory: Path
    state: Path
    out_dir: Path
    timeout: int = TIMEOUT

    def argv(self, site: str) -> list[str]:
        exe = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or "ansible-playbook"
        return [exe, "-i", str(self.ansible_inventory), str(self.playbook), "-l", site, "--check", "--diff"]

    def run(self, site: str) -> dict:
        log = self.out_dir / f"{site}.log"
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="basisit-drift-") as tmp:
            records = Path(tmp) / "records.jsonl"
            env = {
                **os.environ,
                "BASISIT_STATE": str(self.state),
                "BASISIT_INVENTORY": str(self.inventory),
                "ANSIBLE_STDOUT_CALLBACK": "basisit_drift",
                "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "BASISIT_DRIFT_RECORDS": str(records),
                "BASISIT_DRIFT_SECRETS": str(self.state / "secrets"),
            }
            env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
            argv = self.argv(site)
            rc, error = None, None
            with log.open("w", encoding="utf-8") as fh:
                fh.write("$ " + " ".join(argv) + "\n")
                fh.flush()
                try:
                    rc = subprocess.call(
                        argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        timeout=self.timeout,
                    )  # fmt: skip
                except subprocess.TimeoutExpired:
                    error = f"timed out after {self.timeout} s"
            recs = []
            if records.exists():
                for ln in records.read_text(encoding="utf-8").splitlines():
                    try:
                        recs.append(json.loads(ln))
                    except ValueError:
                        continue
        seconds = round(time.monotonic() - t0, 2)
        stats = {r["host"]: r for r in recs if r.get("kind") == "stats"}
        if error is None and not stats:  # the play never ran (inventory error, syntax error, …)
            error = f"ansible-playbook exited {rc} before any host ran: {_last_line(log)}"
        return _site_result(site, recs, stats, seconds, rc, error, log)


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _site_result(site: str, recs: list[dict], stats: dict, seconds: float, rc, error, log: Path) -> dict:
    def items(kind: str) -> list[dict]:
        out = []
        for r in recs:
            if r.get("kind") != kind:
                continue
            d = {k: r.get(k, "") for k in ITEM_FIELDS} | {"kommune": site, "no_log": bool(r.get("no_log"))}
            if kind != "change":
                d["message"] = r.get("message", "")
            out.append(d)
        return out

    changes = items("change")
    return {
        "kommune": site,
        "seconds": seconds,
        "ansible_exit": rc,
        "error": error,
        "log": str(log),
        "hosts": sorted(stats),
        "hosts_drifted": sorted({c["host"] for c in changes}),
        "changes": changes,
        "failed": items("failed"),
        "unreachable": items("unreachable"),
    }


def exit_status(sites: list[dict]) -> int:
    if any(s["changes"] or s["failed"] or s["error"] for s in sites):
        return EXIT_FAIL
    if any(s["unreachable"] for s in sites):
        return EXIT_UNREACHABLE
    return EXIT_OK


def scrub(sites: list[dict], secrets_dir: Path) -> None:
    """Redact once more with the secrets as they are after the run (a lookup may have made one)."""
    r = redact.Redactor.from_dir(secrets_dir)
    for s in sites:
        s["error"] = r.text(s["error"]) if s["error"] else s["error"]
        for kind in ("changes", "failed", "unreachable"):
            for it in s[kind]:
                for k, v in it.items():
                    if isinstance(v, str):
                        it[k] = r.text(v)


def cmd_drift(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    if args.parallel < 1:
        raise UsageError(f"--parallel {args.parallel}: expected a positive number of sites")
    if args.timeout < 1:
        raise UsageError(f"--timeout {args.timeout}: expected seconds >= 1")
    if not args.playbook.is_file():
        raise UsageError(f"{args.playbook}: no such playbook")
    waiver_list = []
    if not args.no_dashboard:
        from basisit.verify import waivers as wv

        try:
            waiver_list = wv.load(Path(args.inventory) / wv.FILENAME, estate)
        except wv.WaiverError as e:
            print(str(e), file=sys.stderr)
            return EXIT_INPUT
    slugs = select_sites(estate, args.kommune, args.wave, args.all)
    with_zentral = bool(args.all or args.zentral)
    if not slugs and not with_zentral:
        raise UsageError("nothing selected; name Kommunen with --kommune SLUG, a wave with --wave W, or --all")
    state = sitefacts.state_dir(args.state).resolve()
    redact.Redactor.from_dir(state / "secrets")  # every secret decryptable, else exit 2 before any run
    sites = [*slugs, ZENTRAL] if with_zentral else slugs
    named = set(args.kommune or []) | ({ZENTRAL} if args.zentral else set())
    try:
        sites, unrealised = sitefacts.realised_sites(state, estate, sites, named)
    except sitefacts.FactsError as e:
        print(f"basisit: {e}", file=sys.stderr)
        return EXIT_INPUT
    if unrealised:
        print(f"not realised, left out: {', '.join(unrealised)}")
    inventory = Path(args.inventory).resolve()
    started = dt.datetime.now(dt.UTC)
    run_id = started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"
    out_dir = state / "reports" / "drift" / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.cloud:
        from basisit.drift.cloud import CloudRunner

        runner = CloudRunner(state, out_dir)
    else:
        runner = Runner(
            playbook=args.playbook.resolve(),
            ansible_inventory=(args.ansible_inventory or inventory / "basisit.yml").resolve(),
            inventory=inventory,
            state=state,
            out_dir=out_dir,
            timeout=args.timeout,
        )
    return run(runner, estate, state, sites, run_id, started, args.parallel, not args.no_dashboard, waiver_list)


def run(runner: Runner, estate, state: Path, sites: list[str], run_id: str, started, parallel: int, dashboard: bool,
        waiver_list: list) -> int:  # fmt: skip
    from basisit.verify import history

    t0 = time.monotonic()
    source = "hosts" if isinstance(runner, Runner) else "cloud"
    how = "check mode with diff" if source == "hosts" else "dry-run Pulumi refresh"
    print(f"drift run {run_id}: {', '.join(sites)} ({how}); logs in {runner.out_dir}", flush=True)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(runner.run, sites))
    scrub(results, state / "secrets")
    status = exit_status(results)
    finished = dt.datetime.now(dt.UTC)
    run_info = {
        "id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration": round(time.monotonic() - t0, 2),
        "selection": sites,
        "source": source,
        "playbook": str(runner.playbook) if source == "hosts" else None,
        "exit_status": status,
        "report_dir": str(runner.out_dir),
        "changes": sum(len(s["changes"]) for s in results),
        "hosts_drifted": sum(len(s["hosts_drifted"]) for s in results),
    }
    doc = {"run": run_info, "kommunen": results}
    tmp = runner.out_dir / "drift.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(runner.out_dir / "drift.json")
    history.append_drift(history.path_in(state), run_info, results)
    index = None
    if dashboard:
        from basisit.report import dashboard as dash

        index = dash.render(estate, state, state / "reports" / "dashboard", waiver_list)
    _print_summary(results, run_info, index)
    return status


def describe(changes: int, hosts: int, source: str = "hosts") -> str:
    if source == "cloud":
        return f"{changes} resource{'s' if changes != 1 else ''} changed"
    return f"{changes} change{'s' if changes != 1 else ''} on {hosts} host{'s' if hosts != 1 else ''}"


def _print_summary(results: list[dict], run: dict, index: Path | None) -> None:
    for s in results:
        extra = ""
        if s["unreachable"]:
            extra += f", {len({u['host'] for u in s['unreachable']})} host(s) unreachable"
        if s["failed"]:
            extra += f", {len(s['failed'])} task(s) failed"
        if s["error"]:
            extra += f", run incomplete: {s['error']}"
        print(
            f"{s['kommune']}: {'cloud ' if run['source'] == 'cloud' else ''}drift: {describe(len(s['changes']), len(s['hosts_drifted']), run['source'])}{extra} ({s['seconds']:.1f} s)"
        )
        for c in s["changes"]:
            what = f" {c['resource']}" if c["resource"] else ""
            item = f" [{c['item']}]" if c["item"] else ""
            hidden = " (no_log: details hidden)" if c["no_log"] else ""
            print(f"DRIFT {c['host']} {c['task']}{item}:{what}{hidden}")
            for ln in c["diff"].splitlines()[:60]:
                print(f"    {ln}")
        for f in s["failed"]:
            print(f"FAILED {f['host']} {f['task']}: {f['message'].splitlines()[0] if f['message'] else ''}")
        for u in s["unreachable"]:
            print(f"UNREACHABLE {u['host']}: {u['message'].splitlines()[0] if u['message'] else ''}")
    print(
        f"drift run {run['id']}: {describe(run['changes'], run['hosts_drifted'], run['source'])} in {len(results)} site(s), "
        f"{run['duration']:.1f} s; report {run['report_dir']}/drift.json" + (f"; dashboard {index}" if index else "")
    )
