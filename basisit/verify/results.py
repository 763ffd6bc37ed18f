"""Check results: classification into five states, JUnit and JSON output, exit status.

The pytest plugin (basisit.verify.plugin) records one raw outcome per check; `classify` turns
those into results with one of five states and applies the waivers:

- pass: the check ran and held;
- fail: the check failed, errored or skipped without saying it does not apply; an expired
  waiver in the run's scope is a failing result of its own;
- waived: the check failed and a valid waiver covers it;
- na (not applicable): the check skipped itself with a reason starting "not applicable";
- unreachable: the host did not answer over SSH (after one retry), so the check could not be
  judged: neither passed nor failed, never waived.

Compliance % = pass / (pass + fail): waived, not-applicable and unreachable checks are left out.
Exit status: 1 when anything failed, else 3 when a check was unreachable, else 0.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from basisit.verify import waivers as wv

STATES = ("pass", "fail", "waived", "na", "unreachable")
EXIT_UNREACHABLE = 3  # nothing failed, but some hosts did not answer: not verified
NA_PREFIX = "not applicable"
EXPIRED_TEST_ID = "waivers::expired"


@dataclass(frozen=True)
class Target:
    """A host the run checks."""

    name: str
    kommune: str
    roles: tuple[str, ...]
    address: str = ""


@dataclass
class Result:
    nodeid: str
    test_id: str
    host: str
    kommune: str
    controls: list[str]
    state: str
    duration: float = 0.0
    message: str = ""
    commands: list[str] = field(default_factory=list)
    waiver: dict | None = None
    reproduce: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def test_id_of(nodeid: str) -> str:
    """tests/compliance/test_base.py::test_x[param] -> test_base::test_x."""
    path, _, rest = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}::{rest.split('[', 1)[0]}"


def param_id(nodeid: str) -> str:
    return nodeid.split("[", 1)[1][:-1] if "[" in nodeid else ""


def reproduce(r: Result, ssh_config: str | None) -> list[str]:
    """Commands an operator runs to see this result again: the single check, and the probe itself."""
    func = r.test_id.split("::", 1)[1] if "::" in r.test_id else r.test_id
    pid = param_id(r.nodeid)
    expr = f"{func} and {pid}" if pid else func
    select = "--zentral" if r.kommune == "zentral" else f"--kommune {r.kommune}"
    out = [f"basisit verify {select} -- -k {shlex.quote(expr)}"]
    if r.commands and ssh_config and r.host:
        out.append(f"ssh -F {shlex.quote(ssh_config)} {r.host} {shlex.quote(r.commands[-1])}")
    return out


def classify(
    raw: list[dict],
    targets: list[Target],
    waiver_list: list[wv.Waiver],
    today: dt.date,
    ssh_config: str | None = None,
) -> list[Result]:
    """Raw plugin records -> results with their final state; adds one failing result per expired waiver."""
    roles = {t.name: t.roles for t in targets}
    valid = [w for w in waiver_list if not wv.expired(w, today)]
    out: list[Result] = []
    for rec in raw:
        outcome = rec["outcome"]
        msg = rec.get("message", "")
        if outcome == "passed":
            state = "pass"
        elif outcome == "unreachable":
            state = "unreachable"
        elif outcome == "skipped" and msg.lower().startswith(NA_PREFIX):
            state = "na"
        elif outcome == "skipped":
            state, msg = "fail", f"skipped without being not applicable: {msg}"
        else:
            state = "fail"
        r = Result(
            nodeid=rec["nodeid"],
            test_id=rec.get("test_id") or test_id_of(rec["nodeid"]),
            host=rec.get("host", ""),
            kommune=rec.get("kommune", ""),
            controls=list(rec.get("controls", [])),
            state=state,
            duration=round(float(rec.get("duration", 0.0)), 3),
            message=msg,
            commands=list(rec.get("commands", [])),
        )
        if state == "fail" and not rec.get("unwaivable"):
            subj = wv.Subject(r.test_id, r.nodeid, tuple(r.controls), r.host, r.kommune, roles.get(r.host, ()))
            for w in valid:
                if wv.matches(w, subj):
                    r.state = "waived"
                    r.waiver = wv.to_dict(w, today)
                    break
        r.reproduce = reproduce(r, ssh_config)
        out.append(r)
    # Expired waivers that reach any host of this run fail, once per Kommune they reach.
    for w in waiver_list:
        if not wv.expired(w, today):
            continue
        reached = sorted({t.kommune for t in targets if wv.in_scope(w, t.name, t.kommune, t.roles)})
        for k in reached:
            scope = ",".join(f"{a}={b}" for a, b in wv.to_dict(w, today)["scope"].items())
            out.append(
                Result(
                    nodeid=f"inventory/waivers.yaml::{w.id}[{scope}]",
                    test_id=EXPIRED_TEST_ID,
                    host=w.scope.host or "",
                    kommune=k,
                    controls=[w.id] if not w.id.startswith("test_") else [],
                    state="fail",
                    message=f"waiver for {w.id} ({scope}) expired on {w.expires.isoformat()} "
                    f"(approved by {w.approver}); renew it with a new approval or fix the finding",
                    waiver=wv.to_dict(w, today),
                    reproduce=["basisit verify --check-waivers"],
                )
            )
    return out


def summary(results: list[Result]) -> dict[str, int]:
    c = Counter(r.state for r in results)
    return {s: c.get(s, 0) for s in STATES} | {"total": len(results)}


def compliance(counts: dict[str, int]) -> float | None:
    """Percent of evaluable checks that pass (waived and n/a left out); None when nothing was evaluable."""
    n = counts.get("pass", 0) + counts.get("fail", 0)
    return round(100.0 * counts.get("pass", 0) / n, 1) if n else None


def per_kommune(results: list[Result]) -> dict[str, dict]:
    by: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by[r.kommune].append(r)
    out = {}
    for k, rs in sorted(by.items()):
        s = summary(rs)
        out[k] = s | {"compliance": compliance(s)}
    return out


def exit_status(results: list[Result]) -> int:
    """1 when something failed; else 3 when a host was unreachable; 0 when every check was judged
    and nothing failed (waived and not applicable do not fail)."""
    if any(r.state == "fail" for r in results):
        return 1
    return EXIT_UNREACHABLE if any(r.state == "unreachable" for r in results) else 0


def write_json(path: Path, run: dict, results: list[Result], waiver_list: list[dict]) -> Path:
    s = summary(results)
    doc = {
        "schema": "basisit/verify-run",
        "version": 1,
        "run": run,
        "summary": s | {"compliance": compliance(s)},
        "kommunen": per_kommune(results),
        "waivers": waiver_list,
        "results": [r.to_dict() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_junit(path: Path, results: list[Result], run_id: str) -> Path:
    """One <testsuite> per host, named `kommune/host`; control ids as testcase properties.

    Waived and not-applicable checks are <skipped> with a message saying which; failing checks
    (including expired waivers) are <failure>; unreachable checks are <error type="unreachable">
    (CI tools show errors apart from failures: the check could not run, it did not fail).
    """
    suites: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        suites[(r.kommune, r.host or "-")].append(r)
    root = ET.Element("testsuites", name=f"basisit verify {run_id}")
    tot = Counter()
    for (kommune, host), rs in sorted(suites.items()):
        s = summary(rs)
        tot.update(s)
        ts = ET.SubElement(
            root,
            "testsuite",
            name=f"{kommune}/{host}",
            tests=str(len(rs)),
            failures=str(s["fail"]),
            errors=str(s["unreachable"]),
            skipped=str(s["waived"] + s["na"]),
            time=f"{sum(r.duration for r in rs):.3f}",
            timestamp=run_id,
            hostname=host,
        )
        props = ET.SubElement(ts, "properties")
        ET.SubElement(props, "property", name="kommune", value=kommune)
        ET.SubElement(props, "property", name="host", value=host)
        for r in rs:
            module, _, func = r.test_id.partition("::")
            name = func + (f"[{param_id(r.nodeid)}]" if param_id(r.nodeid) else "")
            tc = ET.SubElement(
                ts, "testcase", classname=f"{kommune}.{host}.{module}", name=name, time=f"{r.duration:.3f}"
            )
            tp = ET.SubElement(tc, "properties")
            ET.SubElement(tp, "property", name="kommune", value=kommune)
            ET.SubElement(tp, "property", name="host", value=host)
            ET.SubElement(tp, "property", name="state", value=r.state)
            for c in r.controls:
                ET.SubElement(tp, "property", name="control", value=c)
            if r.state == "fail":
                f = ET.SubElement(tc, "failure", message=(r.message.splitlines() or ["failed"])[0][:500])
                f.text = r.message + ("\nreproduce: " + "\n  ".join(r.reproduce) if r.reproduce else "")
            elif r.state == "waived":
                w = r.waiver or {}
                ET.SubElement(
                    tc,
                    "skipped",
                    message=f"waived: {w.get('id')} until {w.get('expires')} by {w.get('approver')}: "
                    f"{w.get('justification')}",
                )
            elif r.state == "na":
                ET.SubElement(tc, "skipped", message=r.message)
            elif r.state == "unreachable":
                e = ET.SubElement(
                    tc, "error", type="unreachable", message=(r.message.splitlines() or ["unreachable"])[0][:500]
                )
                e.text = r.message
    root.set("tests", str(tot["total"]))
    root.set("failures", str(tot["fail"]))
    root.set("errors", str(tot["unreachable"]))
    root.set("skipped", str(tot["waived"] + tot["na"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
