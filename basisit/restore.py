"""`basisit restore`: rebuild a lost domain controller on a fresh host from zentral's backup.

    basisit restore --kommune SLUG --host dc1 [--host-ready] [--dc-only] [--no-verify]

Steps, each timed and logged under `<state>/reports/restore/<run id>/`:

1. recreate — a fresh host at the DC's model name and address. Lab: the machine is booted again
   from the golden image when it is gone (`lab up` for the Kommune; a running machine is left as
   it is). Cloud: the replacement needs the Pulumi engine (`pulumi up --replace` of the host's
   instance, whose URN the stack program gives: printed, never run here); then run again with
   `--host-ready`, after `basisit facts import`.
2. restore — `playbooks/restore-dc.yml -l <kommune> -e restore_dc_host=<host>`: the newest
   snapshot's Samba domain backup from the Kommune's repository (its own credential, from the
   control host's secrets), restored under the DC's own name (roles/ad_dc tasks/restore.yml: same
   domain SID, users, groups, passwords, member computer accounts; a host that holds a domain
   database is refused); then the Kommune's normal converge (site.yml, imported: it starts the DC
   and brings the rest; members keep their trust, nothing re-joins); then the DC's DNS records
   registered and answering. `--dc-only` limits the converge to the DC.
3. verify — `basisit verify --kommune <kommune>`.

The run's `restore.json` holds each step's seconds and result; `rto_seconds` is the sum (the
time from "DC gone" to "verified" when the run starts right after the loss; bench/restore.py
measures it). Exit status: 0 restored and verified, 1 a step failed, 2 bad input.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from basisit import model, sitefacts
from basisit.cli import EXIT_FAIL, EXIT_OK, UsageError, estate_of, select_sites

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
TIMEOUTS = {"recreate": 900, "restore": 3600, "verify": 1800}

Out = Callable[[str], None]


class RestoreError(Exception):
    """A step failed: one line, naming the step and its log."""


@dataclass
class Step:
    name: str
    result: str  # ok, failed, skipped
    seconds: float
    detail: str = ""
    log: str = ""


@dataclass
class Run:
    kommune: str
    host: str
    backend: str
    out_dir: Path
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.result != "failed" for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "kommune": self.kommune,
            "host": self.host,
            "backend": self.backend,
            "result": "ok" if self.ok else "failed",
            "rto_seconds": round(sum(s.seconds for s in self.steps), 1),
            "steps": [s.__dict__ for s in self.steps],
        }


def dc_host(site: model.Site, name: str) -> model.Host:
    """The Kommune's domain controller named `name` (short name `dc1` or inventory name `nalbach-dc1`)."""
    for h in site.hosts:
        if name in (h.short, h.name):
            if "ad_dc" not in h.roles:
                raise UsageError(
                    f"{site.slug}: host {h.name} has roles {', '.join(h.roles)}; restore rebuilds domain controllers (ad_dc)"
                )
            return h
    dcs = [h.short for h in site.hosts if "ad_dc" in h.roles]
    raise UsageError(f"{site.slug}: no host {name!r}; its domain controllers: {', '.join(dcs) or 'none'}")


def backend_of(state: Path, site: model.Site, estate: model.Estate, host: model.Host) -> str:
    """The backend that realised the site (its site facts); the host must be one of them."""
    try:
        doc = sitefacts.read(state, site.slug, estate)
    except sitefacts.FactsError as e:
        raise UsageError(str(e)) from None
    if doc is None:
        raise UsageError(
            f"{site.slug}: no site facts in {sitefacts.facts_path(state, site.slug)}; the Kommune is not realised "
            f"(lab: basisit lab up --kommune {site.slug}; cloud: pulumi up, then basisit facts import)"
        )
    if host.name not in doc.get("hosts", {}):
        raise UsageError(f"{site.slug}: {host.name} is not realised (not in its site facts)")
    return doc["backend"]


def cloud_replace_command(estate: model.Estate, site: model.Site, host: model.Host) -> str:
    """The `pulumi up --replace` of the host's instance, with the URN the stack program gives.

    The URN comes from running the real program under the Pulumi mocks (basisit.cloud.mockrun):
    no engine, no cloud; only the engine can replace the instance."""
    from basisit.cloud import config as cloud_config
    from basisit.cloud import mockrun

    run = mockrun.run_site(estate, site)
    urn = run.urns.get(host.name)
    if urn is None or not urn.endswith("openstack:compute/instance:Instance::" + host.name):
        raise RestoreError(f"{site.slug}: the stack program has no instance {host.name} (URN {urn})")
    stack_dir = cloud_config.STACKS_DIR / "kommune"
    return f"pulumi -C {stack_dir} up --stack {site.slug} --replace '{urn}'"


@dataclass
class Runner:
    """Runs the steps' commands with the project's environment; output to one log per step."""

    inventory: Path
    state: Path
    out_dir: Path
    control_dir: Path

    def env(self) -> dict[str, str]:
        env = {**os.environ, "BASISIT_STATE": str(self.state), "BASISIT_INVENTORY": str(self.inventory)}
        env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
        env.update(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
        # a fresh control socket directory: a master connection to the lost host must not be reused
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(self.control_dir)
        return env

    def run(self, step: str, argv: list[str]) -> str:
        log = self.out_dir / f"{step}.log"
        with log.open("w", encoding="utf-8") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()
            try:
                p = subprocess.run(
                    argv, cwd=ROOT, env=self.env(), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=TIMEOUTS[step], check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise RestoreError(f"{step}: timed out after {TIMEOUTS[step]} s; see {log}") from None
        if p.returncode != 0:
            raise RestoreError(f"{step}: exited {p.returncode}: {_last_lines(log)}; see {log}")
        return str(log)

    def playbook(self, step: str, playbook: str, limit: str, *extra: str) -> str:
        exe = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or "ansible-playbook"
        inv = self.inventory / "basisit.yml"
        return self.run(step, [exe, "-i", str(inv), str(PLAYBOOKS / playbook), "-l", limit, *extra])

    def basisit(self, step: str, *args: str) -> str:
        cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(self.inventory), "--state", str(self.state)]
        return self.run(step, [*cmd, *args])


def _last_lines(log: Path) -> str:
    """The failure's gist from a step's log: ansible's failure with its message, or the last line."""
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("fatal:", "failed:")) or "FAILED!" in lines[i]:
            msg = next((ln for ln in lines[i + 1 : i + 12] if ln.startswith("msg:")), "")
            return " ".join(f"{lines[i]} {msg}".split())[:600]
    return lines[-1][:400] if lines else "(no output)"


def restore(
    estate: model.Estate,
    slug: str,
    host_name: str,
    state: Path,
    inventory: Path,
    host_ready: bool = False,
    dc_only: bool = False,
    verify: bool = True,
    out: Out = print,
) -> Run:
    site = estate.site(slug)
    h = dc_host(site, host_name)
    backend = backend_of(state, site, estate, h)
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = state / "reports" / "restore" / f"{run_id}-{slug}-{h.short}"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(slug, h.name, backend, out_dir)
    with tempfile.TemporaryDirectory(prefix="basisit-rst-") as cp:
        runner = Runner(inventory, state, out_dir, Path(cp))
        steps: list[tuple[str, Callable[[], str]]] = []
        if host_ready:
            run.steps.append(Step("recreate", "skipped", 0.0, "--host-ready: the host is a fresh one already"))
        elif backend == "lab":
            steps.append(("recreate", lambda: _recreate_lab(estate, slug, h, state, inventory, out_dir)))
        else:
            cmd = cloud_replace_command(estate, site, h)
            raise RestoreError(
                f"{slug}: {h.name} runs on the {backend} backend; its replacement needs the Pulumi engine: run\n"
                f"  {cmd}\n  basisit facts import --kommune {slug} <(pulumi -C stacks/kommune stack output --stack "
                f"{slug} --json)\nthen: basisit restore --kommune {slug} --host {h.short} --host-ready"
            )
        limit = h.name if dc_only else slug
        steps.append(
            ("restore", lambda: runner.playbook("restore", "restore-dc.yml", limit, "-e", f"restore_dc_host={h.name}"))
        )
        if verify:
            steps.append(("verify", lambda: runner.basisit("verify", "verify", "--kommune", slug)))
        try:
            for name, fn in steps:
                t0 = time.monotonic()
                out(f"{slug}/{h.short}: {name} …")
                try:
                    log = fn()
                except RestoreError as e:
                    run.steps.append(Step(name, "failed", round(time.monotonic() - t0, 1), str(e)))
                    out(f"{slug}/{h.short}: {name} FAILED: {e}")
                    break
                secs = round(time.monotonic() - t0, 1)
                run.steps.append(Step(name, "ok", secs, log=log))
                out(f"{slug}/{h.short}: {name} ok ({secs:.1f} s)")
        finally:
            (out_dir / "restore.json").write_text(json.dumps(run.to_dict(), indent=2) + "\n", encoding="utf-8")
    return run


def _recreate_lab(estate: model.Estate, slug: str, h: model.Host, state: Path, inventory: Path, out_dir: Path) -> str:
    """The lab's fresh host: `lab up` boots machines that are gone from the golden image."""
    from basisit.lab import lab
    from basisit.lab.system import LabError

    log = out_dir / "recreate.log"
    lines: list[str] = []
    running = lab.host_running(estate, slug, h.name, state)
    try:
        lab.up(estate, [slug], state, inventory, out=lines.append)
    except LabError as e:
        log.write_text("\n".join([*lines, str(e)]) + "\n", encoding="utf-8")
        raise RestoreError(f"recreate: {e}") from None
    if running:
        lines.append(f"{h.name}: was running; left as it is (restore refuses a host with a domain database)")
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(log)


# --- command line ------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="rebuild a lost domain controller on a fresh host from zentral's backup, then converge and verify",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--kommune", required=True, metavar="SLUG", help="the Kommune of the DC")
    p.add_argument("--host", required=True, metavar="NAME", help="the DC: short name (dc1) or inventory name")
    p.add_argument(
        "--host-ready",
        action="store_true",
        help="the host is a fresh one already (cloud: after pulumi up --replace and facts import); do not recreate",
    )
    p.add_argument(
        "--dc-only", action="store_true", help="converge only the DC after the restore, not the whole Kommune"
    )
    p.add_argument("--no-verify", action="store_true", help="skip basisit verify after the restore")
    p.add_argument("--json", action="store_true", help="print the run's restore.json")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    select_sites(estate, [args.kommune])  # an unknown slug is a usage error
    state = sitefacts.state_dir(args.state).resolve()
    out: Out = (lambda _line: None) if args.json else (lambda line: print(line, flush=True))
    try:
        run = restore(
            estate,
            args.kommune,
            args.host,
            state,
            Path(args.inventory).resolve(),
            host_ready=args.host_ready,
            dc_only=args.dc_only,
            verify=not args.no_verify,
            out=out,
        )
    except RestoreError as e:
        print(f"basisit restore: {e}", file=sys.stderr)
        return EXIT_FAIL
    doc = run.to_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"{args.kommune}/{args.host}: {doc['result']} in {doc['rto_seconds']:.1f} s; {run.out_dir / 'restore.json'}"
        )
    return EXIT_OK if run.ok else EXIT_FAIL
