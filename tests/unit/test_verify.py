"""The verification engine without the lab: waivers, classification, JUnit/JSON, history.

The classification tests run a real (tiny) check suite with pytest, pytest-xdist and the
basisit plugin against testinfra's local backend; nothing of basisit is mocked.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from basisit.validate import load_estate
from basisit.verify import controls, history, results
from basisit.verify import waivers as wv

ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.date(2026, 11, 22)


@pytest.fixture(scope="module")
def estate():
    return load_estate(ROOT / "inventory")


def write_waivers(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"waivers": entries}, sort_keys=False), encoding="utf-8")
    return path


def waiver(**kw) -> dict:
    d = {
        "id": "gs:SYS.1.3.A8",
        "scope": {"kommune": "nalbach"},
        "justification": "Bridging until the named admins carry hardware keys.",
        "approver": "eGo-Saar ISB",
        "expires": "2026-12-31",
    }
    d.update(kw)
    return d


# --- waivers: schema and validation ---------------------------------------------------------


def test_shipped_waivers_file_is_valid(estate):
    assert isinstance(wv.load(ROOT / "inventory" / "waivers.yaml", estate), list)


def test_missing_waivers_file_means_none(tmp_path):
    assert wv.load(tmp_path / "waivers.yaml") == []


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"approver": None}, "waivers[0] (gs:SYS.1.3.A8): approver: is missing"),
        ({"expires": "31.12.2026"}, "waivers[0] (gs:SYS.1.3.A8): expires:"),
        ({"expires": "2026-02-30"}, "waivers[0] (gs:SYS.1.3.A8): expires:"),
        ({"id": "SYS.1.3.A8"}, "waivers[0] (SYS.1.3.A8): id: 'SYS.1.3.A8' has no catalogue prefix"),
        ({"id": "cis-deb12:five"}, "id: 'cis-deb12:five' is not a valid CIS Debian Linux 12 v1.1.0 id"),
        ({"scope": {}}, "scope: needs at least one of kommune, role, host"),
        ({"scope": {"town": "x"}}, "scope.town: is not a waiver field"),
        ({"justification": "because"}, "justification: String should have at least 20 characters"),
        ({"reason": "x"}, "reason: is not a waiver field"),
    ],
)
def test_invalid_waiver_names_file_entry_and_field(tmp_path, change, expect):
    entry = waiver()
    for k, v in change.items():
        if v is None:
            entry.pop(k)
        else:
            entry[k] = v
    p = write_waivers(tmp_path / "waivers.yaml", [entry])
    with pytest.raises(wv.WaiverError) as e:
        wv.load(p)
    assert f"{p}: " in str(e.value)
    assert expect in str(e.value)


@pytest.mark.parametrize(
    ("scope", "expect"),
    [
        ({"kommune": "atlantis"}, "scope.kommune: unknown Kommune 'atlantis'"),
        ({"role": "mainframe"}, "scope.role: unknown role 'mainframe'"),
        ({"host": "nalbach-dc9"}, "scope.host: no host 'nalbach-dc9' in the model"),
        ({"kommune": "bous", "host": "nalbach-gw"}, "scope.host: nalbach-gw is not a host of bous"),
    ],
)
def test_waiver_scope_checked_against_model(tmp_path, estate, scope, expect):
    p = write_waivers(tmp_path / "waivers.yaml", [waiver(scope=scope)])
    with pytest.raises(wv.WaiverError, match=expect):
        wv.load(p, estate)


def test_unreadable_yaml_is_one_line(tmp_path):
    p = tmp_path / "waivers.yaml"
    p.write_text("waivers: [\n", encoding="utf-8")
    with pytest.raises(wv.WaiverError) as e:
        wv.load(p)
    assert str(e.value).startswith(f"{p}: cannot be read as YAML") and "\n" not in str(e.value)


def _w(**kw) -> wv.Waiver:
    return wv.Waiver.model_validate(waiver(**kw))


def subject(**kw) -> wv.Subject:
    d = {
        "test_id": "test_base::test_sshd_option",
        "nodeid": "tests/compliance/test_base.py::test_sshd_option[nalbach-gw-passwordauthentication]",
        "controls": ("gs:SYS.1.3.A8", "devsec:sshd-27"),
        "host": "nalbach-gw",
        "kommune": "nalbach",
        "roles": ("gateway",),
    }
    d.update(kw)
    return wv.Subject(**d)


@pytest.mark.parametrize(
    ("w", "subj", "hit"),
    [
        (_w(), subject(), True),
        (_w(id="devsec:sshd-27"), subject(), True),
        (_w(id="cis-deb12:5.1.20"), subject(), False),
        (_w(id="test_base::test_sshd_option"), subject(), True),
        (_w(id="test_base::test_sshd_option[nalbach-gw-passwordauthentication]"), subject(), True),
        (_w(id="test_base::test_sshd_banner"), subject(), False),
        (_w(scope={"kommune": "bous"}), subject(), False),
        (_w(scope={"role": "gateway"}), subject(), True),
        (_w(scope={"role": "ad_dc"}), subject(), False),
        (_w(scope={"host": "nalbach-gw"}), subject(), True),
        (_w(scope={"host": "nalbach-dc1"}), subject(), False),
        (_w(scope={"kommune": "nalbach", "role": "ad_dc"}), subject(), False),
    ],
)
def test_waiver_matching(w, subj, hit):
    assert wv.matches(w, subj) is hit


def test_waiver_valid_through_expiry_day():
    w = _w(expires="2026-11-22")
    assert not wv.expired(w, TODAY)
    assert wv.expired(w, TODAY + dt.timedelta(days=1))
    assert wv.expiring_soon(w, TODAY)
    assert not wv.expiring_soon(_w(expires="2027-06-01"), TODAY)


@pytest.mark.parametrize(
    ("control", "ok"),
    [
        ("gs:SYS.1.3.A8", True),
        ("gs:OPS.1.1.2.A5", True),
        ("gs:SYS.1.3", False),
        ("wiba:Serversysteme", True),
        ("wiba:Rollen / Berechtigungen / Authentisierung", True),
        ("cis-deb12:5.1.20", True),
        ("cis-deb12:5", False),
        ("devsec:sshd-27", True),
        ("devsec:os-03b", True),
        ("devsec:ssh27", False),
        ("nist:AC-2", False),
    ],
)
def test_control_id_syntax(control, ok):
    assert (controls.problem(control) is None) is ok


def test_control_families():
    assert controls.family("gs:SYS.1.3.A8") == "SYS.1.3"
    assert controls.family("gs:NET.3.2.A2") == "NET.3.2"
    assert controls.family("cis-deb12:5.1.20") == "CIS 5.1"
    assert controls.family("devsec:sshd-27") == "dev-sec sshd"


# --- a real pytest run of a fake suite ------------------------------------------------------

FAKE_CONFTEST = """
from dataclasses import dataclass

import pytest
import testinfra


@dataclass(frozen=True)
class T:
    name: str
    kommune: str


TARGETS = [T("nalbach-gw", "nalbach"), T("bous-gw", "bous")]


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", TARGETS, ids=[t.name for t in TARGETS], scope="module")


@pytest.fixture(scope="module")
def host(target):
    return testinfra.get_host("local://")
"""

FAKE_CHECKS = """
import pytest

from basisit.verify import plugin


@pytest.mark.controls("gs:SYS.1.3.A2", "devsec:os-07")
def test_passwd_exists(host):
    assert host.file("/etc/passwd").exists


@pytest.mark.controls("gs:SYS.1.3.A8", "devsec:sshd-27")
def test_always_fails(host):
    plugin.record_command("echo finding")
    assert host.run("echo finding").stdout.strip() == "compliant", "finding on this host"


@pytest.mark.controls("cis-deb12:3.3.1")
def test_not_for_routers(host):
    pytest.skip("not applicable: routing is this host's job")


@pytest.mark.controls("gs:CON.3.A5")
def test_gated(host):
    pytest.skip("gated: role feature backup_client not landed")


@pytest.mark.controls("gs:CON.3.A15")
def test_skips_silently(host):
    pytest.skip("no idea")


@pytest.fixture
def broken():
    raise RuntimeError("host vanished")


@pytest.mark.controls("gs:SYS.1.1.A23")
def test_setup_error(host, broken):
    pass
"""


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory) -> dict:
    """Run the fake suite once, through pytest-xdist like `basisit verify` does."""
    d = tmp_path_factory.mktemp("suite")
    (d / "conftest.py").write_text(FAKE_CONFTEST, encoding="utf-8")
    (d / "test_fake.py").write_text(FAKE_CHECKS, encoding="utf-8")
    out = d / "raw.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(d),
            "-p",
            "basisit.verify.plugin",
            "-p",
            "no:cacheprovider",
            "--basisit-results",
            str(out),
            "-o",
            "addopts=--strict-markers",
            "-q",
            "-n",
            "2",
            "--rootdir",
            str(d),
        ],
        capture_output=True,
        text=True,
        cwd=d,
        timeout=120,
    )
    assert out.exists(), p.stdout + p.stderr
    return json.loads(out.read_text(encoding="utf-8"))


TARGETS = [
    results.Target("nalbach-gw", "nalbach", ("gateway",)),
    results.Target("bous-gw", "bous", ("gateway",)),
]


def test_plugin_records_host_kommune_controls_through_xdist(raw_run):
    recs = {r["nodeid"].split("::")[1]: r for r in raw_run["records"]}
    r = recs["test_always_fails[nalbach-gw]"]
    assert (r["host"], r["kommune"]) == ("nalbach-gw", "nalbach")
    assert r["controls"] == ["gs:SYS.1.3.A8", "devsec:sshd-27"]
    assert r["outcome"] == "failed" and "finding on this host" in r["message"]
    assert "echo finding" in r["commands"]
    assert recs["test_setup_error[bous-gw]"]["message"].startswith("error in setup: RuntimeError: host vanished")


def test_gated_checks_are_listed_not_counted(raw_run):
    assert not [r for r in raw_run["records"] if "test_gated" in r["nodeid"]]
    assert any("test_gated" in g and "backup_client" in g for g in raw_run["gated"])


def test_classification_four_states_and_expired_waiver(raw_run):
    ws = [
        _w(id="devsec:sshd-27", scope={"kommune": "nalbach"}, expires="2026-12-31"),  # waives nalbach's failure
        _w(id="cis-deb12:5.1.20", scope={"role": "gateway"}, expires="2026-11-01"),  # expired: fails twice
        _w(id="gs:CON.3.A5", scope={"kommune": "mettlach"}, expires="2026-01-01"),  # expired, not in this run
    ]
    res = results.classify(raw_run["records"], TARGETS, ws, TODAY, "/state/verify/ssh_config")
    by = {(r.test_id, r.host): r for r in res if r.test_id != results.EXPIRED_TEST_ID}
    assert by[("test_fake::test_passwd_exists", "nalbach-gw")].state == "pass"
    assert by[("test_fake::test_always_fails", "nalbach-gw")].state == "waived"
    assert by[("test_fake::test_always_fails", "nalbach-gw")].waiver["id"] == "devsec:sshd-27"
    assert by[("test_fake::test_always_fails", "bous-gw")].state == "fail"
    assert by[("test_fake::test_not_for_routers", "bous-gw")].state == "na"
    assert by[("test_fake::test_skips_silently", "bous-gw")].state == "fail"
    assert by[("test_fake::test_setup_error", "nalbach-gw")].state == "fail"
    expired = [r for r in res if r.test_id == results.EXPIRED_TEST_ID]
    assert sorted(r.kommune for r in expired) == ["bous", "nalbach"]
    assert all(r.state == "fail" and "expired on 2026-11-01" in r.message for r in expired)
    assert results.exit_status(res) == 1
    fail = by[("test_fake::test_always_fails", "bous-gw")]
    assert fail.reproduce[0] == "basisit verify --kommune bous -- -k 'test_always_fails and bous-gw'"
    assert fail.reproduce[1] == "ssh -F /state/verify/ssh_config bous-gw 'echo finding'"


def test_exit_status_zero_when_only_waived_and_na():
    res = [
        results.Result("a", "m::t", "h", "k", [], "pass"),
        results.Result("b", "m::t", "h", "k", [], "waived"),
        results.Result("c", "m::t", "h", "k", [], "na"),
    ]
    assert results.exit_status(res) == 0
    assert results.compliance(results.summary(res)) == 100.0
    assert results.exit_status([*res, results.Result("d", "m::t", "h", "k", [], "fail")]) == 1
    assert results.compliance(results.summary([])) is None


def test_junit_and_json(raw_run, tmp_path):
    res = results.classify(raw_run["records"], TARGETS, [], TODAY)
    j = results.write_junit(tmp_path / "junit.xml", res, "20261122T013000Z")
    root = ET.parse(j).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"nalbach/nalbach-gw", "bous/bous-gw"}
    s = suites["nalbach/nalbach-gw"]
    case = next(c for c in s.iter("testcase") if c.get("name") == "test_always_fails[nalbach-gw]")
    assert case.get("classname") == "nalbach.nalbach-gw.test_fake"
    props = [(p.get("name"), p.get("value")) for p in case.find("properties")]
    assert ("control", "gs:SYS.1.3.A8") in props and ("control", "devsec:sshd-27") in props
    assert ("kommune", "nalbach") in props and ("host", "nalbach-gw") in props
    assert case.find("failure") is not None
    na = next(c for c in s.iter("testcase") if c.get("name").startswith("test_not_for_routers"))
    assert na.find("skipped").get("message").startswith("not applicable")
    assert int(root.get("tests")) == len(res) and int(root.get("failures")) == results.summary(res)["fail"]

    doc = json.loads(results.write_json(tmp_path / "r.json", {"id": "x"}, res, []).read_text(encoding="utf-8"))
    assert doc["summary"]["total"] == len(res)
    assert doc["kommunen"]["nalbach"]["fail"] == results.summary([r for r in res if r.kommune == "nalbach"])["fail"]
    assert {r["state"] for r in doc["results"]} == {"pass", "fail", "na"}


def _res(kommune: str, fails: int, passes: int = 3) -> list[results.Result]:
    out = [
        results.Result(f"t::p{i}", "test_x::test_p", f"{kommune}-gw", kommune, ["gs:SYS.1.3.A8"], "pass")
        for i in range(passes)
    ]
    out += [
        results.Result(f"t::f{i}", "test_x::test_f", f"{kommune}-gw", kommune, ["gs:NET.3.2.A2"], "fail", message="x")
        for i in range(fails)
    ]
    return out


def test_history_append_trend_latest(tmp_path):
    db = tmp_path / "history.sqlite"
    for night, fails in enumerate([3, 1, 0]):
        run = {
            "id": f"2026111{night}T013000Z",
            "started": f"2026-11-1{night}T01:30:00+00:00",
            "finished": f"2026-11-1{night}T01:35:00+00:00",
            "selection": ["nalbach", "bous"],
            "exit_status": 1 if fails else 0,
            "report_dir": "/x",
        }
        history.append(db, run, _res("nalbach", fails) + _res("bous", 1))
    trend = history.trend(db, "nalbach")
    assert [t["compliance"] for t in trend] == [50.0, 75.0, 100.0]
    assert history.latest(db)["nalbach"]["run_id"] == "20261112T013000Z"
    assert len(history.runs(db)) == 3
    rows = history.results_of(db, "20261112T013000Z", "bous")
    assert [r["state"] for r in rows].count("fail") == 1 and rows[0]["controls"]
    assert history.trend(tmp_path / "none.sqlite", "nalbach") == []


def test_partial_runs_are_not_trend_points(tmp_path):
    db = tmp_path / "history.sqlite"
    base = {"selection": ["nalbach"], "exit_status": 1, "report_dir": "/x"}
    history.append(db, base | {"id": "a", "started": "2026-11-10T01:30:00+00:00", "finished": "x"}, _res("nalbach", 1))
    history.append(
        db,
        base | {"id": "b", "started": "2026-11-11T01:30:00+00:00", "finished": "x", "partial": True},
        _res("nalbach", 0, 1),
    )
    assert [t["run_id"] for t in history.trend(db, "nalbach")] == ["a"]
    assert history.latest(db)["nalbach"]["run_id"] == "a"
    assert [r["id"] for r in history.runs(db, include_partial=True)] == ["a", "b"]


def test_checks_without_targets_are_no_results(tmp_path):
    """A role no host of the run has gives pytest an empty parameter set: not a result, not a failure."""
    (tmp_path / "test_empty.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('target', [])\ndef test_nobody(target):\n    pass\n",
        encoding="utf-8",
    )
    out = tmp_path / "raw.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path),
            "-p",
            "basisit.verify.plugin",
            "-p",
            "no:cacheprovider",
            "--basisit-results",
            str(out),
            "-o",
            "addopts=",
            "-q",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert json.loads(out.read_text(encoding="utf-8"))["records"] == []


# --- verify never reads private keys ----------------------------------------------------------

WG_KEY_SUBCOMMANDS = {"dump", "private-key", "preshared-keys", "showconf"}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of a module except docstrings, with its line."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_no_compliance_check_reads_a_private_key():
    """Contract: no check in tests/compliance runs `wg show … dump|private-key`, `wg showconf`,
    or reads a key file (the suite also refuses such commands at run time)."""
    from basisit.verify.suite import reads_private_key

    found = []
    modules = sorted((ROOT / "tests" / "compliance").glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        for line, s in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if reads_private_key(s) or s.strip() in WG_KEY_SUBCOMMANDS:
                found.append(f"{path.relative_to(ROOT)}:{line}: {s!r}")
    assert not found, "checks that would read private keys:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        ("wg show wg0 dump", True),
        ("wg show wg0 private-key", True),
        ("wg showconf wg0", True),
        ("cat -- /etc/wireguard/wg0.conf", True),
        ("cat /etc/ssh/ssh_host_ed25519_key", True),
        ("base64 /root/.ssh/id_ed25519", True),
        ("grep PrivateKey /etc/systemd/network/wg0.netdev", True),
        ("wg show wg0 public-key", False),
        ("wg show wg0 latest-handshakes", False),
        ("wg show wg0 endpoints", False),
        ("cat /etc/ssh/ssh_host_ed25519_key.pub", False),
        ("stat -c %a /etc/wireguard/wg0.conf", False),
        ("apt-config dump", False),
        ("sshd -T", False),
    ],
)
def test_private_key_reads_are_recognised(command, refused):
    from basisit.verify.suite import reads_private_key

    assert bool(reads_private_key(command)) is refused
