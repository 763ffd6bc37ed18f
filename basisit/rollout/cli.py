"""`basisit rollout`: the command, its live table and its summary."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
from pathlib import Path

from basisit import sitefacts
from basisit.rollout.ledger import Ledger, path_in
from basisit.rollout.steps import EXIT_UNREACHABLE, Commands
from basisit.rollout.waves import Plan, Rollout


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
    ledger = Ledger(path_in(state))
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
