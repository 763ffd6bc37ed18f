"""Cloud drift: does a Kommune's tenant still match its Pulumi state?

`basisit drift --cloud` runs, per selected site, the Automation API's dry-run refresh
(`Stack.preview_refresh`, the CLI's `pulumi refresh --preview-only`) of its stack (stack name =
slug; project stacks/kommune, zentral's stacks/zentral): nothing in the state or the cloud
changes. Every resource the refresh would update or delete is one record (resource = URN, the
changed property names as its diff; values are never recorded), kept in the same drift
history (source `cloud`) and shown on the dashboard next to the hosts' drift. The engine's own
count (the change summary) is authoritative: resources it counts but did not describe are
recorded as one item saying so.
"""

from __future__ import annotations

import time
from pathlib import Path

from basisit.drift import redact

ROOT = Path(__file__).resolve().parent.parent.parent
PROJECTS = {"kommune": ROOT / "stacks" / "kommune", "zentral": ROOT / "stacks" / "zentral"}
DRIFT_OPS = {"update", "delete", "replace", "create", "create-replacement", "delete-replaced"}
NOT_CHANGES = {"same", "read", "refresh"}


def _op(value) -> str:
    return str(getattr(value, "value", value) or "")


def records(events: list, site: str) -> list[dict]:
    """The drifted resources in a refresh preview's engine events (one record per URN)."""
    out: dict[str, dict] = {}
    for ev in events:
        for e in (getattr(ev, "resource_pre_event", None), getattr(ev, "res_outputs_event", None)):
            md = getattr(e, "metadata", None)
            if md is None or _op(md.op) not in DRIFT_OPS or md.type == "pulumi:pulumi:Stack":
                continue
            diffs = sorted(set(md.diffs or []) | set((md.detailed_diff or {}).keys()))
            out[md.urn] = {
                "kommune": site,
                "host": md.urn.rsplit("::", 1)[-1],
                "task": f"cloud {md.type}",
                "role": "pulumi",
                "action": _op(md.op),
                "resource": md.urn,
                "item": "",
                "no_log": False,
                "diff": ("changed: " + ", ".join(diffs)) if diffs else "",
            }
    return list(out.values())


class CloudRunner:
    """preview_refresh of one site's stack; the result in the shape basisit.drift.cli reports."""

    def __init__(self, state: Path, out_dir: Path, projects: dict[str, Path] | None = None):
        self.state, self.out_dir, self.projects = state, out_dir, projects or PROJECTS

    def run(self, site: str) -> dict:
        log = self.out_dir / f"{site}.cloud.log"
        r = redact.Redactor.from_dir(self.state / "secrets")
        work_dir = self.projects["zentral" if site == "zentral" else "kommune"]
        t0 = time.monotonic()
        events: list = []
        changes: list[dict] = []
        error = None
        with log.open("w", encoding="utf-8") as fh:
            fh.write(f"$ pulumi refresh --preview-only --stack {site} --cwd {work_dir}\n")
            try:
                from pulumi import automation as auto

                stack = auto.select_stack(stack_name=site, work_dir=str(work_dir))
                res = stack.preview_refresh(
                    on_event=events.append,
                    on_output=lambda s: fh.write(r.text(s) + "\n"),
                    color="never",
                    show_secrets=False,
                    suppress_outputs=True,
                    suppress_progress=True,
                )
                changes = records(events, site)
                counted = sum(n for op, n in (res.change_summary or {}).items() if _op(op) not in NOT_CHANGES)
                if counted > len(changes):
                    changes.append(
                        {
                            "kommune": site, "host": site, "task": "cloud resources", "role": "pulumi",
                            "action": "update", "resource": f"stack {site}", "item": "", "no_log": False,
                            "diff": f"{counted - len(changes)} more resource(s) would change (the engine did not describe them)",
                        }
                    )  # fmt: skip
            except FileNotFoundError as e:
                error = (
                    f"the pulumi CLI is not installed ({e.filename or 'pulumi'}: not found); the Automation API runs it"
                )
                fh.write(error + "\n")
            except Exception as e:  # no CLI, no login, no such stack, a provider error: the run did not complete
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                error = r.text(f"{type(e).__name__}: {lines[0] if lines else ''}"[:300])
                fh.write(r.text(str(e)) + "\n")
        return {
            "kommune": site,
            "seconds": round(time.monotonic() - t0, 2),
            "ansible_exit": None,
            "error": error,
            "log": str(log),
            "hosts": [],
            "hosts_drifted": sorted({c["host"] for c in changes}),
            "changes": changes,
            "failed": [],
            "unreachable": [],
        }
