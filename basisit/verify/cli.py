"""`basisit verify`: the nightly compliance run over the realised sites.

    basisit verify [--kommune SLUG …|--wave W|--all] [--jobs N] [-- PYTEST-ARGS]

1. selects Kommunen and reads their site facts (a Kommune named with --kommune that was never
   realised is an input error, exit 2; with --wave/--all such Kommunen are listed and left out);
2. writes `<state>/verify/ssh_config` and opens one multiplexed SSH connection per host (the
   probe, retried once): a host that does not answer is *unreachable*, and so are all its checks;
3. runs pytest-testinfra on tests/compliance in parallel (pytest-xdist `-n JOBS`); a transport
   error during a check (ssh's exit 255, a timeout) is retried once, and if it persists the host
   is unreachable from then on — never a failed check;
4. classifies the results (pass, fail, waived, not applicable, unreachable; expired waivers fail)
   and writes `<state>/reports/runs/<run id>/{results.json,junit.xml}`, appends to
   `<state>/history.sqlite` and renders the dashboard into `<state>/reports/dashboard/`.

Exit status: 0 every check judged and nothing failed, 1 something failed, 2 bad input,
3 nothing failed but some hosts were unreachable (not verified).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from basisit import sitefacts
from basisit.cli import EXIT_FAIL, EXIT_INPUT, EXIT_OK, UsageError, add_site_selection, estate_of, select_sites
from basisit.verify import history, results, targets
from basisit.verify import waivers as wv

ROOT = Path(__file__).resolve().parent.parent.parent
SUITE = ROOT / "tests" / "compliance"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="the compliance run: check realised Kommunen, write reports, history and dashboard",
        description=__doc__.split("\n\n")[0],
    )
    add_site_selection(p, "verify")
    p.add_argument("--jobs", "-j", type=int, default=max(2, os.cpu_count() or 2), help="parallel pytest workers")
    p.add_argument(
        "--connect-timeout",
        type=int,
        default=targets.CONNECT_TIMEOUT,
        help=f"seconds until a host that does not answer is tried once more, then unreachable (default {targets.CONNECT_TIMEOUT})",
    )
    p.add_argument("--check-waivers", action="store_true", help="only validate inventory/waivers.yaml and list them")
    p.add_argument("--no-dashboard", action="store_true", help="skip rendering the dashboard")
    p.add_argument("--suite", type=Path, default=SUITE, help=argparse.SUPPRESS)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments (e.g. -k NAME)")
    p.set_defaults(func=cmd_verify)


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _waivers(args, estate) -> list[wv.Waiver]:
    return wv.load(Path(args.inventory) / wv.FILENAME, estate)


@dataclass(frozen=True)
class VerifyOptions:
    """What a verify run needs of its command line, checked and built once by cmd_verify."""

    inventory: Path
    suite: Path
    jobs: int
    connect_timeout: int
    pytest_args: tuple[str, ...] = ()  # extra pytest arguments (a leading "--" dropped)
    dashboard: bool = True
    check_zentral: bool = False  # zentral's own checks run (selected and realised)

    @classmethod
    def from_args(cls, args: argparse.Namespace, check_zentral: bool) -> VerifyOptions:
        extra = list(args.pytest_args or [])
        if extra[:1] == ["--"]:
            extra = extra[1:]
        return cls(
            inventory=Path(args.inventory),
            suite=args.suite,
            jobs=args.jobs,
            connect_timeout=args.connect_timeout,
            pytest_args=tuple(extra),
            dashboard=not args.no_dashboard,
            check_zentral=check_zentral,
        )


def cmd_verify(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    try:
        waiver_list = _waivers(args, estate)
    except wv.WaiverError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INPUT
    if args.check_waivers:
        today = _today()
        for w in waiver_list:
            d = wv.to_dict(w, today)
            flag = (
                "EXPIRED" if d["expired"] else (f"expires in {d['days_left']} days" if d["expiring_soon"] else "valid")
            )
            scope = ",".join(f"{a}={b}" for a, b in d["scope"].items())
            print(f"{w.id}  [{scope}]  until {d['expires']} ({flag}), approved by {w.approver}")
        print(f"{len(waiver_list)} waiver(s) valid in form")
        return EXIT_OK
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: expected a positive number of workers")
    if args.connect_timeout < 1:
        raise UsageError(f"--connect-timeout {args.connect_timeout}: expected seconds >= 1")
    slugs = select_sites(estate, args.kommune, args.wave, args.all)
    with_zentral = bool(args.all or args.zentral)
    if not slugs and not with_zentral:
        raise UsageError("nothing selected; name Kommunen with --kommune SLUG, a wave with --wave W, or --all")
    if not args.suite.is_dir():
        raise UsageError(f"{args.suite}: no such test suite directory")
    state = sitefacts.state_dir(args.state)
    named = set(args.kommune or []) | ({"zentral"} if args.zentral else set())
    try:
        realised, unrealised = sitefacts.realised_sites(
            state, estate, [*slugs, *(["zentral"] if with_zentral else [])], named
        )
    except sitefacts.FactsError as e:
        print(f"basisit: {e}", file=sys.stderr)
        return EXIT_INPUT
    if unrealised:
        print(f"not realised, left out: {', '.join(unrealised)}")
    slugs = [s for s in realised if s != "zentral"]
    opts = VerifyOptions.from_args(args, check_zentral="zentral" in realised)
    with targets.run_lock(state) as alone:
        return run(opts, estate, state, slugs, waiver_list, alone)


def run(
    opts: VerifyOptions, estate, state: Path, slugs: list[str], waiver_list: list[wv.Waiver], alone=lambda: True
) -> int:
    """One verify run: probe the hosts, run the suite, classify, write reports, history and dashboard."""
    started = dt.datetime.now(dt.UTC)
    run_id = started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"
    run_dir = state / "reports" / "runs" / run_id
    t0 = time.monotonic()
    try:
        hosts = targets.hosts_of(estate, state, slugs, check_zentral=opts.check_zentral)
    except sitefacts.FactsError as e:  # another site's facts (cross-site checks reach its hosts too)
        print(f"basisit: {e}", file=sys.stderr)
        return EXIT_INPUT
    run_dir.mkdir(parents=True, exist_ok=True)
    checked = [*slugs, "zentral"] if opts.check_zentral else slugs
    config, ctx = _probe(opts, hosts, state, run_dir, checked)
    t_probe = time.monotonic() - t0

    raw_path = run_dir / "raw.json"
    rc, log = _run_suite(opts, ctx, state, run_dir, raw_path)
    if alone():  # another verify on this state directory may still use the master connections
        targets.stop_masters([h for h in hosts if h.reachable], config)
    _mark_unreachable_midrun(hosts, run_dir)
    if not raw_path.exists():
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-15:]
        print(f"basisit: the check run did not complete (pytest exit {rc}); see {log}:", file=sys.stderr)
        print("\n".join("  " + ln for ln in tail), file=sys.stderr)
        return EXIT_FAIL
    raw = json.loads(raw_path.read_text(encoding="utf-8"))
    check_hosts = [results.Target(h.name, h.kommune, tuple(h.roles), h.address) for h in hosts if h.check]
    today = _today()
    res = results.classify(raw["records"], check_hosts, waiver_list, today, str(config.resolve()))
    if not res:
        print("basisit: no checks ran (nothing collected); refusing to report an empty run as passing", file=sys.stderr)
        return EXIT_FAIL
    finished = dt.datetime.now(dt.UTC)
    status = results.exit_status(res)
    run_info = {
        "id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration": round(time.monotonic() - t0, 2),
        "probe_seconds": round(t_probe, 2),
        "selection": checked,
        "hosts": [
            {"name": h.name, "kommune": h.kommune, "reachable": h.reachable, "error": h.error} for h in hosts if h.check
        ],
        "jobs": opts.jobs,
        "pytest_exit": rc,
        "gated": raw.get("gated", []),
        "exit_status": status,
        "report_dir": str(run_dir),
        "partial": bool(opts.pytest_args),
    }
    index = _write_reports(opts, estate, state, run_dir, run_info, res, check_hosts, waiver_list, today)
    _print_summary(res, run_info, run_dir, index)
    return status


def _probe(opts: VerifyOptions, hosts: list, state: Path, run_dir: Path, checked: list[str]) -> tuple[Path, Path]:
    """The SSH config and one master connection per host (a host that does not answer is
    unreachable, and said so); the context file the suite reads. Returns (ssh config, context)."""
    config = targets.write_ssh_config(hosts, state, opts.connect_timeout)
    targets.probe_all(hosts, config, jobs=16, connect_timeout=opts.connect_timeout)
    for h in hosts:
        if h.check and not h.reachable:
            print(f"{h.name}: {h.error}")
    ctx = targets.write_context(run_dir / "context.json", hosts, config, checked, opts.inventory)
    return config, ctx


def pytest_command(opts: VerifyOptions, raw_path: Path) -> list[str]:
    """The suite's pytest command line: the results plugin, xdist workers, the extra arguments."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(opts.suite),
        "-p",
        "basisit.verify.plugin",
        "-p",
        "no:cacheprovider",
        "--basisit-results",
        str(raw_path),
        "-q",
        "-rfE",
        "--no-header",
        "-o",
        "addopts=--strict-markers",
        "-n",
        str(opts.jobs if opts.jobs > 1 else 0),
        *opts.pytest_args,
    ]


def _run_suite(opts: VerifyOptions, ctx: Path, state: Path, run_dir: Path, raw_path: Path) -> tuple[int, Path]:
    """Run the compliance suite with its output in run_dir/pytest.log; (pytest's exit, the log)."""
    cmd = pytest_command(opts, raw_path)
    env = os.environ | {
        targets.CONTEXT_ENV: str(ctx.resolve()),
        "BASISIT_INVENTORY": str(opts.inventory.resolve()),
        "BASISIT_STATE": str(state.resolve()),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = run_dir / "pytest.log"
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return rc, log


def _mark_unreachable_midrun(hosts: list, run_dir: Path) -> None:
    """Hosts that stopped answering during the run (the plugin marked them) are unreachable."""
    for name, reason in targets.marked_unreachable(run_dir).items():
        for h in hosts:
            if h.name == name and h.reachable is not False:
                h.reachable, h.error = False, reason.removeprefix(f"{name}: ")
                if h.check:
                    print(f"{h.name}: {h.error}")


def _write_reports(
    opts: VerifyOptions,
    estate,
    state: Path,
    run_dir: Path,
    run_info: dict,
    res: list[results.Result],
    check_hosts: list[results.Target],
    waiver_list: list[wv.Waiver],
    today: dt.date,
) -> Path | None:
    """results.json (with the waivers that apply), junit.xml, the history and the dashboard
    (unless --no-dashboard); returns the dashboard's index."""
    relevant = [
        wv.to_dict(w, today)
        for w in waiver_list
        if any(wv.in_scope(w, t.name, t.kommune, t.roles) for t in check_hosts)
    ]
    results.write_json(run_dir / "results.json", run_info, res, relevant)
    results.write_junit(run_dir / "junit.xml", res, run_info["id"])
    history.append(history.path_in(state), run_info, res)
    if not opts.dashboard:
        return None
    from basisit.report import dashboard

    return dashboard.render(estate, state, state / "reports" / "dashboard", waiver_list, today)


def _print_summary(res: list[results.Result], run: dict, run_dir: Path, index: Path | None) -> None:
    for k, c in results.per_kommune(res).items():
        pct = f"{c['compliance']:.1f} %" if c["compliance"] is not None else "–"
        unreach = f", {c['unreachable']} unreachable" if c["unreachable"] else ""
        print(
            f"{k}: {c['pass']} pass, {c['fail']} fail, {c['waived']} waived, {c['na']} n/a{unreach} — compliance {pct}"
        )
    failing = [r for r in res if r.state == "fail"]
    for r in failing[:40]:
        ctl = " ".join(r.controls) or "-"
        print(
            f"FAIL {r.host or r.kommune} {r.test_id}{'[' + results.param_id(r.nodeid) + ']' if results.param_id(r.nodeid) else ''} ({ctl}): {r.message.splitlines()[0] if r.message else ''}"
        )
    if len(failing) > 40:
        print(f"… and {len(failing) - 40} more failures (see the JSON report)")
    down = [h for h in run["hosts"] if h["reachable"] is False]
    for h in down:
        n = sum(1 for r in res if r.state == "unreachable" and r.host == h["name"])
        print(f"UNREACHABLE {h['name']} ({n} check(s) not judged): {h['error']}")
    if run["gated"]:
        print(f"gated (role feature not landed, not run): {len(run['gated'])} check(s)")
    s = results.summary(res)
    print(
        f"run {run['id']}: {s['total']} checks, {s['pass']} pass, {s['fail']} fail, {s['waived']} waived, "
        f"{s['na']} n/a, {s['unreachable']} unreachable in {run['duration']:.1f} s; reports in {run_dir}"
        + (f"; dashboard {index}" if index else "")
    )
