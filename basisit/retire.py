"""`basisit retire --kommune SLUG [--backend lab|cloud]`: a Kommune leaves the estate.

The inventory says it first: the Kommune's file gets `status: retired` (validated; its net_index,
AGS and names stay reserved). The model then leaves it out of everything derived (hosts, groups,
the VPN hub's peers, the backup server's REST users, the log host's senders, every allow rule and
security group), and `basisit retire` carries that out:

1. its tenant goes: lab backend, the lab's per-Kommune `lab down` (machines, bridges, the zentral
   gateway's transfer link); cloud backend, the `pulumi destroy` commands of its stack are printed
   for the operator (no Pulumi engine runs here; the data volumes are `protect`ed, so the destroy
   stops at them until they are unprotected on purpose), and its site facts are removed;
2. zentral is converged with the Kommune retired (`playbooks/site.yml -l zentral`): its WireGuard
   peer, its htpasswd entry (REST credential), its log senders and its allow rules are gone, and
   its repository is kept read-only (root's, readable by the service user, writable by no
   listener; role backup_server, feature `retired`);
3. the ledger (`<state>/ledger.sqlite`, a run with steps `teardown`, `converge` of zentral and
   `retired`) and the history (`<state>/history.sqlite`, table `retired`: when, backend, how long
   its backups are kept) say so; the dashboard lists it as retired.

Its backups are kept for the retention period: until the retirement date plus the longest
retention of the standard (keep_daily days, keep_weekly weeks, keep_monthly months of 31 days).
Deleting the repository after that is the operator's decision, not a converge's.

Exit status: 0 done, 1 a step failed (the ledger says which; re-running retries it), 2 bad input
(the Kommune is unknown or not marked retired).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

from basisit import sitefacts
from basisit.model import ZENTRAL, Estate
from basisit.rollout import Commands, Ledger, StepFailed


def keep_until(estate: Estate, when: dt.date) -> dt.date:
    """The date until which a retired Kommune's backups are kept: the longest retention of the standard."""
    r = dict(estate.standard.services.backup.retention)  # restic's keep_* options: {keep_daily: 7, ...}
    per = {"keep_daily": 1, "keep_weekly": 7, "keep_monthly": 31, "keep_yearly": 366}
    days = max((per[k] * int(v) for k, v in r.items() if k in per), default=0)
    return when + dt.timedelta(days=days)


def cloud_commands(slug: str) -> list[str]:
    """What the operator runs to take a Kommune's cloud tenant down (docs/pulumi.md)."""
    q = shlex.quote(slug)
    return [
        f"pulumi destroy --stack {q} --cwd stacks/kommune   # stops at the protected data volumes",
        f"pulumi state unprotect --all --yes --stack {q} --cwd stacks/kommune   # only once their data is in zentral's backup",
        f"pulumi destroy --stack {q} --cwd stacks/kommune",
        f"pulumi stack rm {q} --cwd stacks/kommune",
        f"git rm stacks/kommune/Pulumi.{q}.yaml && basisit stacks config --check",
        "pulumi up --stack zentral --cwd stacks/zentral   # zentral's security groups without the Kommune",
    ]


def _teardown_lab(estate: Estate, slug: str, state: Path) -> str:
    from basisit.lab import lab
    from basisit.lab.system import LabEnvError, LabError

    lines: list[str] = []
    try:
        lab.down(estate, [slug], False, False, state, lines.append)
    except (LabEnvError, LabError) as e:
        raise StepFailed(f"lab down --kommune {slug}: {e}") from None
    for ln in lines:
        print(f"  {ln}", flush=True)
    return "; ".join(lines) or f"{slug}: lab down"


def run(estate: Estate, slug: str, inventory: Path, state: Path, backend: str, converge: bool = True) -> int:
    """Retire `slug` (already `status: retired` in `estate`); returns the exit status."""
    from basisit.verify import history

    site = estate.retired[slug]
    today = dt.datetime.now(dt.UTC).date()
    until = keep_until(estate, today)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    cmds = Commands(inventory, state, backend, state / "logs" / "retire" / stamp)
    ledger = Ledger(state / "ledger.sqlite")
    version = estate.standard.version
    run_id = ledger.start_run(backend, version, ["retire", slug])
    result = "ok"

    def step(site_slug: str, name: str, fn, inputs: str = "") -> bool:
        nonlocal result
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        print(f"{site_slug}: {name} ...", flush=True)
        try:
            detail = fn() or ""
        except StepFailed as e:
            ledger.record(run_id, site_slug, name, version, started, time.monotonic() - t0, "failed", e.detail, e.log)
            print(f"{site_slug}: {name} failed: {e.detail}" + (f" (log {e.log})" if e.log else ""), flush=True)
            result = "failed"
            return False
        ledger.record(run_id, site_slug, name, version, started, time.monotonic() - t0, "ok", detail, inputs=inputs)
        print(f"{site_slug}: {name} ok ({time.monotonic() - t0:.0f} s)", flush=True)
        return True

    try:
        if backend == "lab":
            ok = step(slug, "teardown", lambda: _teardown_lab(estate, slug, state))
        else:

            def printed() -> str:
                print(f"{slug}: its cloud tenant is destroyed by the operator, from the repository root:")
                for c in cloud_commands(slug):
                    print(f"  {c}")
                sitefacts.remove(state, slug)
                return "operator runs: " + " && ".join(c.split("   #")[0] for c in cloud_commands(slug))

            ok = step(slug, "teardown", printed)
        if ok and converge:
            digest = cmds.zentral_inputs()
            ok = step(ZENTRAL, "converge", lambda: cmds.converge(ZENTRAL), inputs=digest)
        if ok:
            detail = (
                f"removed: tenant ({backend}), VPN peer, REST credential, log senders, allow rules on zentral; "
                f"kept: repository {slug} read-only until {until.isoformat()}"
            )
            step(slug, "retired", lambda: detail)
            history.record_retired(
                history.path_in(state),
                slug,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                backend,
                until.isoformat(),
                detail,
            )
    finally:
        ledger.finish_run(run_id, result)
        ledger.close()
    if result != "ok":
        print(f"{slug} ({site.name}): not retired completely; the ledger run {run_id} says which step failed")
        return 1
    print(
        f"{slug} ({site.name}): retired. Removed: its {backend} tenant, its VPN peer, REST credential, "
        f"log senders and allow rules on zentral{'' if converge else ' (after the next zentral converge)'}. "
        f"Kept: its backups, read-only on zentral until {until.isoformat()}."
    )
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    from basisit.cli import EXIT_FAIL, UsageError, estate_of

    estate = estate_of(args)
    slug = args.kommune
    if slug in estate.kommunen:
        raise UsageError(
            f"{slug} is not marked retired: set `status: retired` in {estate.sources.get(slug, 'its Kommune file')} "
            "(and commit it), then run basisit retire again"
        )
    if slug not in estate.retired:
        raise UsageError(f"unknown Kommune {slug!r}; expected a slug from inventory/kommunen/ marked `status: retired`")
    if args.backend == "lab" and os.geteuid() != 0:
        raise UsageError("the lab backend needs root (it stops containers and removes bridges); run as root")
    state = sitefacts.state_dir(args.state).resolve()
    try:
        return run(estate, slug, Path(args.inventory).resolve(), state, args.backend, converge=not args.no_converge)
    except OSError as e:
        print(f"basisit retire: {e}", file=sys.stderr)
        return EXIT_FAIL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retire",
        help="a Kommune marked `status: retired` leaves the estate: tenant down, zentral converged without it",
    )
    p.add_argument("--kommune", required=True, metavar="SLUG", help="the Kommune (its file says status: retired)")
    p.add_argument("--backend", choices=["lab", "cloud"], default="lab")
    p.add_argument(
        "--no-converge",
        action="store_true",
        help="do not converge zentral now (its next converge drops the Kommune); the ledger says so",
    )
    p.set_defaults(func=cmd_retire)
