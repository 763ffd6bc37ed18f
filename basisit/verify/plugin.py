"""pytest plugin of `basisit verify` (loaded with `-p basisit.verify.plugin`).

- registers the markers of the compliance suite: `controls(*ids)`, `role(name)`, `feature(path)`;
- records on every item its host, Kommune and control ids as user properties (they travel with
  the reports through pytest-xdist, unlike `record_testsuite_property`);
- lets checks record the commands they ran (`record_command`), for the reproduce hints;
- collects one raw record per item on the controlling process and writes them as JSON to
  `--basisit-results PATH`, for basisit.verify.results.classify.

A check that raised `targets.Unreachable` (the host did not answer over SSH, after one retry)
is recorded with outcome "unreachable": pytest itself still reports it as an error (a direct
pytest run never passes it), `basisit verify` reports it as state `unreachable`.

Skips whose reason starts with "gated:" mark checks for role features that have not landed; they
are listed separately and never count as results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basisit.verify.targets import Unreachable

GATED_PREFIX = "gated:"
NO_TARGETS = "got empty parameter set"
_current: list[pytest.Item] = []
_config: list[pytest.Config] = []
_KEY = pytest.StashKey[dict]()

MARKERS = [
    "controls(*ids): control ids a check verifies (gs:…, wiba:…, cis-deb12:…, devsec:…)",
    "role(name): the inventory role whose hosts a module's checks target ('any' = every host)",
    "feature(path): the role feature a check needs (role/taskfile, e.g. base/sshd); gated until it lands",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--basisit-results", default=None, help="write raw check records (JSON) to this file")


def pytest_configure(config: pytest.Config) -> None:
    for m in MARKERS:
        config.addinivalue_line("markers", m)
    if not hasattr(config, "workerinput"):
        config.stash[_KEY] = {}
        _config[:] = [config]


def controls_of(item: pytest.Item) -> list[str]:
    out: list[str] = []
    for m in item.iter_markers("controls"):
        out += [c for c in m.args if c not in out]
    return out


def _target_of(item: pytest.Item):
    cs = getattr(item, "callspec", None)
    if cs is None:
        return None
    for v in cs.params.values():
        if hasattr(v, "name") and hasattr(v, "kommune"):
            return v
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        t = _target_of(item)
        props = dict(item.user_properties)
        if t is not None and "host" not in props:
            item.user_properties.append(("host", t.name))
            item.user_properties.append(("kommune", t.kommune))
        item.user_properties.append(("controls", " ".join(controls_of(item))))


def record_command(command: str) -> None:
    """Called by the suite's host wrapper: remember a command the running check executed."""
    if _current:
        _current[-1].user_properties.append(("command", command))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current.append(item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _current and _current[-1] is item:
        _current.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, Unreachable):
        # user_properties travel with the report through pytest-xdist
        report.user_properties.append(("unreachable", str(call.excinfo.value)))


def _message(report: pytest.TestReport) -> str:
    if report.skipped:
        lr = report.longrepr
        reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
        return reason.removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return crash.message.strip()
    return (report.longreprtext or "").strip()[-2000:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _config[0] if _config else None
    if config is None or _KEY not in config.stash:
        return
    recs = config.stash[_KEY]
    props: dict[str, str] = {}
    commands: list[str] = []
    unreachable = ""
    for k, v in report.user_properties:
        if k == "command":
            commands.append(str(v))
        elif k == "unreachable":
            unreachable = str(v)
        else:
            props[k] = str(v)
    rec = recs.setdefault(
        report.nodeid,
        {
            "nodeid": report.nodeid,
            "host": props.get("host", ""),
            "kommune": props.get("kommune", ""),
            "controls": props.get("controls", "").split(),
            "unwaivable": props.get("unwaivable") == "1",
            "outcome": "passed",
            "message": "",
            "duration": 0.0,
            "commands": [],
        },
    )
    rec["duration"] += report.duration
    for c in commands:
        if c not in rec["commands"]:
            rec["commands"].append(c)
    if unreachable and rec["outcome"] != "failed":
        rec["outcome"] = "unreachable"
        rec["message"] = unreachable
    elif report.failed and rec["outcome"] not in ("failed", "unreachable"):
        rec["outcome"] = "failed"
        phase = "" if report.when == "call" else f"error in {report.when}: "
        rec["message"] = phase + _message(report)
    elif report.skipped and rec["outcome"] == "passed":
        rec["outcome"] = "skipped"
        rec["message"] = _message(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    out = config.getoption("--basisit-results")
    if not out or hasattr(config, "workerinput"):
        return
    recs = list(config.stash.get(_KEY, {}).values())
    gated = sorted(
        {
            r["nodeid"].split("[", 1)[0] + "  (" + r["message"] + ")"
            for r in recs
            if r["outcome"] == "skipped" and r["message"].startswith(GATED_PREFIX)
        }
    )
    # A check whose role no host of this run has (pytest's "got empty parameter set") is no result.
    untargeted = {r["nodeid"] for r in recs if r["outcome"] == "skipped" and r["message"].startswith(NO_TARGETS)}
    checks = [
        r
        for r in recs
        if r["nodeid"] not in untargeted and not (r["outcome"] == "skipped" and r["message"].startswith(GATED_PREFIX))
    ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"records": checks, "gated": gated}, indent=1) + "\n", encoding="utf-8")
