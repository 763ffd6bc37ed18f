# The drift recorder of `basisit drift` (basisit/drift/): a stdout callback for
# `ansible-playbook --check --diff` that writes one JSON line per task that would change,
# failed or could not reach its host, to the file named by $BASISIT_DRIFT_RECORDS (0600).
# Every text it writes or prints passes through basisit.drift.redact first: no_log tasks keep
# only their name, known secret values (the state's secrets directory) and secret-looking
# assignments are replaced. Enabled only by `basisit drift` (ANSIBLE_STDOUT_CALLBACK).
from __future__ import annotations

DOCUMENTATION = """
name: basisit_drift
type: stdout
short_description: records what --check --diff would change, redacted, as JSON lines
description:
  - Used by C(basisit drift). Writes one JSON record per changed, failed or unreachable task and host
    to the file named by E(BASISIT_DRIFT_RECORDS); prints one redacted line per record and the recap.
author: basisit
"""

import difflib
import json
import os
from collections.abc import Mapping

from ansible.plugins.callback import CallbackBase

try:
    from ansible.playbook.handler import Handler
except ImportError:  # pragma: no cover
    Handler = ()

from basisit.drift import redact

RESOURCE_KEYS = ("path", "dest", "name", "unit", "chain", "key", "table", "cmd", "argv", "src")


def _diff_text(diffs) -> str:
    """Ansible's diff structures as a plain unified diff (no colour)."""
    if not isinstance(diffs, list):
        diffs = [diffs]
    out: list[str] = []
    for d in diffs:
        if not isinstance(d, Mapping):
            continue
        for k, msg in (("dst_binary", "destination file appears to be binary"), ("src_binary", "source is binary")):
            if k in d:
                out.append(f"diff skipped: {msg}\n")
        if "before" in d and "after" in d:
            sides = []
            for x in ("before", "after"):
                v = d[x]
                if isinstance(v, Mapping):
                    v = json.dumps(v, sort_keys=True, indent=2, default=str) + "\n"
                sides.append("" if v is None else str(v))
            before, after = (s.splitlines(True) for s in sides)
            for lines in (before, after):
                if lines and not lines[-1].endswith("\n"):
                    lines[-1] += "\n\\ No newline at end of file\n"
            out.extend(
                difflib.unified_diff(
                    before,
                    after,
                    fromfile=f"before: {d['before_header']}" if "before_header" in d else "before",
                    tofile=f"after: {d['after_header']}" if "after_header" in d else "after",
                    n=3,
                )
            )
        if "prepared" in d:
            out.append(str(d["prepared"]).rstrip("\n") + "\n")
    return "".join(out)


def _resource(res: Mapping, task) -> str:
    args = (res.get("invocation") or {}).get("module_args") or {}
    if not isinstance(args, Mapping):
        args = {}
    for k in RESOURCE_KEYS:
        v = args.get(k)
        if isinstance(v, list):  # argv
            v = " ".join(map(str, v))
        if isinstance(v, (str, int)) and str(v) and "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" not in str(v):
            return str(v)
    diff = res.get("diff")
    for d in diff if isinstance(diff, list) else [diff]:
        if isinstance(d, Mapping) and d.get("after_header"):
            return str(d["after_header"])
    for k in RESOURCE_KEYS:
        v = task.args.get(k) if isinstance(task.args, Mapping) else None
        if isinstance(v, str) and v and "{{" not in v:
            return v
    return ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "basisit_drift"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._redactor = redact.Redactor.from_dir(os.environ.get("BASISIT_DRIFT_SECRETS") or None)
        path = os.environ.get("BASISIT_DRIFT_RECORDS")
        self._out = None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._out = os.fdopen(fd, "a", encoding="utf-8")

    # --- writing --------------------------------------------------------------------------

    def _emit(self, rec: dict) -> None:
        # re-read: a lookup may have generated a secret during this run
        self._redactor = redact.Redactor.from_dir(os.environ.get("BASISIT_DRIFT_SECRETS") or None)
        rec = {k: self._redactor.text(v) if isinstance(v, str) else v for k, v in rec.items()}
        if self._out is not None:
            self._out.write(json.dumps(rec, sort_keys=True) + "\n")
            self._out.flush()
        what = rec.get("resource") or ""
        line = f"{rec['kind'].upper()} {rec.get('host', '')} | {rec.get('task', '')}" + (f" | {what}" if what else "")
        if rec.get("message"):
            line += f" | {rec['message'].splitlines()[0][:300] if rec['message'] else ''}"
        self._display.display(line)
        if rec.get("diff"):
            self._display.display(rec["diff"].rstrip("\n"))

    def _base(self, result, kind: str) -> dict:
        task = result._task
        role = getattr(task, "_role", None)
        return {
            "kind": kind,
            "host": result._host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "role": role.get_name() if role else "",
            "handler": isinstance(task, Handler) if Handler else False,
        }

    @staticmethod
    def _no_log(result, res: Mapping) -> bool:
        return bool(res.get("_ansible_no_log") or getattr(result._task, "no_log", False))

    # --- events ---------------------------------------------------------------------------

    def v2_runner_on_ok(self, result) -> None:
        res = result._result
        if not res.get("changed"):
            return
        base = self._base(result, "change")
        if base["handler"]:  # a handler only runs because a task changed: that task is the drift
            return
        items = res.get("results") if isinstance(res.get("results"), list) else None
        for r in items if items is not None else [res]:
            if not isinstance(r, Mapping) or not r.get("changed"):
                continue
            hidden = self._no_log(result, r)
            rec = dict(base, no_log=hidden, resource="", diff="", item="")
            if not hidden:
                rec["resource"] = _resource(r, result._task)
                rec["diff"] = _diff_text(r.get("diff") or [])
                if items is not None:
                    label = r.get("_ansible_item_label", r.get("item", ""))
                    rec["item"] = label if isinstance(label, str) else json.dumps(label, sort_keys=True, default=str)
            self._emit(rec)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        res = result._result
        hidden = self._no_log(result, res)
        msg = "(details hidden: no_log)" if hidden else str(res.get("msg") or res.get("stderr") or "")[:2000]
        self._emit(dict(self._base(result, "failed"), no_log=hidden, resource="", diff="", item="", message=msg))

    def v2_runner_on_unreachable(self, result) -> None:
        msg = str(result._result.get("msg", ""))[:2000]
        self._emit(dict(self._base(result, "unreachable"), no_log=False, resource="", diff="", item="", message=msg))

    def v2_playbook_on_stats(self, stats) -> None:
        self._display.display("\nPLAY RECAP")
        for h in sorted(stats.processed):
            s = stats.summarize(h)
            if self._out is not None:
                self._out.write(json.dumps({"kind": "stats", "host": h, **s}, sort_keys=True) + "\n")
            self._display.display(
                f"{h:<26} : ok={s['ok']:<4} changed={s['changed']:<4} unreachable={s['unreachable']:<4} "
                f"failed={s['failures']:<4} skipped={s['skipped']:<4} rescued={s['rescued']:<4} ignored={s['ignored']:<4}"
            )
        if self._out is not None:
            self._out.close()
            self._out = None
