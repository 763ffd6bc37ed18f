"""A transport hiccup is never a compliance failure.

OpenSSH exits 255 for its own errors. `basisit verify` retries a transport failure once and, if
it persists, reports the host *unreachable* (its own state in JSON, JUnit, history and the
dashboard), never a failed check. No sshd runs here, so:

- `retry_transport` is tested at its boundary with runners that really execute processes
  (`sh -c 'exit 255'`, `true`, a real ssh to a port nothing listens on, a real timeout);
- the compliance suite's machinery (basisit.verify.suite + plugin, real testinfra, real pytest)
  runs a tiny suite against a host that refuses SSH (real ssh) and a host reached through an
  `ssh` on PATH that drops the first connection the way ssh does under load (exit 255, no
  output) and then runs the command locally;
- `basisit verify` runs end to end against hosts that do not answer SSH: exit 3, every check unreachable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_verify_cli import cli, fake_facts

from basisit.verify import history, results, targets

ROOT = Path(__file__).resolve().parents[2]
SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(SSH is None, reason="the OpenSSH client is not installed")


def runner(*commands: list[str], timeout: float | None = None):
    """A run() for retry_transport that executes the given commands in turn, for real."""
    calls: list[list[str]] = []
    it = iter(commands)

    def run():
        argv = next(it)
        calls.append(argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    return run, calls


def probe_of(ok: bool):
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return subprocess.run(["true" if ok else "false"], check=False).returncode == 0

    return probe, calls


# --- retry_transport at its boundary ---------------------------------------------------------


def test_first_attempt_255_without_output_retry_succeeds():
    """The issue's case: ssh returned 255 with no output once; the retry passes the check."""
    run, calls = runner(["sh", "-c", "exit 255"], ["sh", "-c", "echo held"])
    probe, probes = probe_of(ok=False)
    r = targets.retry_transport(run, probe, "nalbach-gw")
    assert r.returncode == 0 and r.stdout.strip() == "held"
    assert len(calls) == 2 and probes == []


def test_persistent_255_with_host_down_is_unreachable():
    run, calls = runner(["sh", "-c", "exit 255"], ["sh", "-c", "exit 255"])
    probe, probes = probe_of(ok=False)
    with pytest.raises(targets.Unreachable) as e:
        targets.retry_transport(run, probe, "nalbach-gw")
    assert len(calls) == 2 and len(probes) == 1
    assert e.value.host == "nalbach-gw" and "(retried once)" in str(e.value)


def test_remote_commands_own_255_is_its_result():
    """255 twice from a host that answers `true` is the remote command's exit status, not transport."""
    run, calls = runner(["sh", "-c", "exit 255"], ["sh", "-c", "exit 255"])
    probe, probes = probe_of(ok=True)
    r = targets.retry_transport(run, probe, "nalbach-gw")
    assert r.returncode == 255 and len(calls) == 2 and len(probes) == 1


def test_ssh_like_255_from_a_host_that_answers_is_the_commands_own():
    """A check may run a client that exits 255 itself (an ssh from the host): not a transport error."""
    script = "echo 'ssh: connect to host 10.160.0.10 port 22: Connection refused' >&2; exit 255"
    run, calls = runner(["sh", "-c", script], ["sh", "-c", script])
    probe, probes = probe_of(ok=True)
    r = targets.retry_transport(run, probe, "nalbach-gw")
    assert r.returncode == 255 and "Connection refused" in r.stderr and len(calls) == 2 and len(probes) == 1


def test_other_exit_status_is_returned_at_once():
    run, calls = runner(["sh", "-c", "echo finding >&2; exit 1"])
    probe, probes = probe_of(ok=False)
    r = targets.retry_transport(run, probe, "nalbach-gw")
    assert r.returncode == 1 and len(calls) == 1 and probes == []


def test_timeout_retried_then_unreachable_when_host_is_down():
    run, calls = runner(["sleep", "5"], ["sleep", "5"], timeout=0.2)
    probe, probes = probe_of(ok=False)
    with pytest.raises(targets.Unreachable, match=r"no answer within 0.2 s \(retried once\)"):
        targets.retry_transport(run, probe, "nalbach-gw")
    assert len(calls) == 2 and len(probes) == 2


def test_timeout_of_a_host_that_answers_is_the_checks_own():
    run, calls = runner(["sleep", "5"], timeout=0.2)
    probe, _ = probe_of(ok=True)
    with pytest.raises(subprocess.TimeoutExpired):
        targets.retry_transport(run, probe, "nalbach-gw")
    assert len(calls) == 1


@needs_ssh
def test_real_ssh_to_a_closed_port_is_unreachable(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        "Host closed\n    HostName 127.0.0.1\n    Port 1\n    BatchMode yes\n    ConnectTimeout 1\n", encoding="utf-8"
    )
    cmd = [SSH, "-F", str(cfg), "closed", "cat /etc/hostname"]
    run, calls = runner(cmd, cmd)
    with pytest.raises(targets.Unreachable, match="Connection refused") as e:
        targets.retry_transport(run, lambda: targets.ssh_true("closed", cfg, 1).returncode == 0, "closed")
    assert len(calls) == 2 and "ssh: connect to host 127.0.0.1 port 1" in e.value.detail


def test_ssh_error_recognises_ssh_messages_only():
    assert targets.ssh_error("kex_exchange_identification: Connection closed by remote host\r\n")
    assert targets.ssh_error(b"ssh: connect to host 10.160.0.1 port 22: Connection timed out\n")
    assert targets.ssh_error("mux_client_request_session: read from master failed: Broken pipe")
    assert not targets.ssh_error("")
    assert not targets.ssh_error("grep: /etc/ssh/sshd_config.d/x.conf: No such file or directory")


# --- the compliance suite's machinery through real pytest and testinfra ------------------------

FAKE_SSH = """\
#!{python}
# Stands in for ssh to the host "flaky-gw": the first connection fails the way ssh does under
# load (exit 255, no output); later ones run the command locally. Other hosts: the real ssh.
import os, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
if "flaky-gw" not in args:
    os.execv({ssh!r}, [{ssh!r}, *args])
command = args[-1]
count = Path(os.environ["FAKE_SSH_COUNT"])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n == 0:
    sys.exit(255)
sys.exit(subprocess.run(["sh", "-c", command]).returncode)
"""

SUITE_CONFTEST = """
from basisit.verify.suite import host, pytest_generate_tests, reachable  # noqa: F401
"""

SUITE_CHECKS = """
import pytest

pytestmark = pytest.mark.role("any")


@pytest.mark.controls("gs:SYS.1.3.A2")
def test_passwd_exists(host):
    assert host.file("/etc/passwd").exists


@pytest.mark.controls("gs:SYS.1.3.A8")
def test_echo(host):
    assert host.run("echo held").stdout.strip() == "held"


@pytest.mark.controls("gs:SYS.1.3.A10")
def test_command_exits_255_by_itself(host):
    assert host.run("exit 255").rc == 255


@pytest.mark.controls("gs:NET.1.1.A4")
def test_reads_a_private_key(host):
    assert host.file("/etc/wireguard/wg0.conf").content_string
"""


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("transport")
    suite = d / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(SUITE_CONFTEST, encoding="utf-8")
    (suite / "test_fake.py").write_text(SUITE_CHECKS, encoding="utf-8")
    bindir = d / "bin"
    bindir.mkdir()
    fake = bindir / "ssh"
    fake.write_text(FAKE_SSH.format(python=sys.executable, ssh=SSH), encoding="utf-8")
    fake.chmod(0o755)
    run_dir = d / "run"
    run_dir.mkdir()
    cfg = run_dir / "ssh_config"
    cfg.write_text(
        "Host down-gw\n    HostName 127.0.0.1\n    Port 1\n"
        "Host *\n    BatchMode yes\n    ConnectTimeout 1\n    ConnectionAttempts 1\n",
        encoding="utf-8",
    )
    hosts = [
        {"name": n, "kommune": "nalbach", "roles": ["gateway"], "address": "127.0.0.1", "addresses": {}, "check": True}
        for n in ("down-gw", "flaky-gw")
    ]
    ctx = run_dir / "context.json"
    ctx.write_text(
        json.dumps(
            {"ssh_config": str(cfg), "kommunen": ["nalbach"], "inventory": str(ROOT / "inventory"), "hosts": hosts}
        ),
        encoding="utf-8",
    )
    raw = run_dir / "raw.json"
    env = os.environ | {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        targets.CONTEXT_ENV: str(ctx),
        "FAKE_SSH_COUNT": str(d / "count"),
    }
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-p",
            "basisit.verify.plugin",
            "-p",
            "no:cacheprovider",
            "--basisit-results",
            str(raw),
            "-o",
            "addopts=--strict-markers",
            "-q",
            "-p",
            "no:randomly",
            "--rootdir",
            str(suite),
        ],
        capture_output=True,
        text=True,
        cwd=suite,
        env=env,
        timeout=120,
    )
    assert raw.exists(), p.stdout + p.stderr
    recs = json.loads(raw.read_text(encoding="utf-8"))["records"]
    return p, {(r["nodeid"].split("::")[1].split("[")[0], r["host"]): r for r in recs}, run_dir, d / "count"


@needs_ssh
def test_suite_host_that_refuses_ssh_is_unreachable_not_failed(suite_run):
    p, recs, run_dir, _ = suite_run
    down = {k: r for k, r in recs.items() if k[1] == "down-gw"}
    assert len(down) == 4 and {r["outcome"] for r in down.values()} == {"unreachable"}
    assert all("Connection refused" in r["message"] and "(retried once)" in r["message"] for r in down.values())
    assert "down-gw" in targets.marked_unreachable(run_dir)  # the run's other workers skip it
    assert p.returncode != 0  # a direct pytest run never passes an unreachable host
    res = results.classify(list(recs.values()), [results.Target("down-gw", "nalbach", ("gateway",))], [], None)
    assert {r.state for r in res if r.host == "down-gw"} == {"unreachable"}


@needs_ssh
def test_suite_first_connection_dropped_then_checks_pass(suite_run):
    _p, recs, _run_dir, count = suite_run
    flaky = {k[0]: r for k, r in recs.items() if k[1] == "flaky-gw"}
    flaky.pop("test_reads_a_private_key")  # refused: see below
    assert {r["outcome"] for r in flaky.values()} == {"passed"}, flaky
    assert int(count.read_text()) >= 4  # the dropped connection was retried


@needs_ssh
def test_suite_refuses_a_command_that_reads_a_private_key(suite_run):
    """Verify never reads private keys: the command is refused before it runs (a failing check)."""
    _p, recs, _run_dir, _count = suite_run
    key = recs[("test_reads_a_private_key", "flaky-gw")]
    assert key["outcome"] == "failed" and "refused: " in key["message"] and "private key" in key["message"]
    assert not any("/etc/wireguard" in c for c in key["commands"])  # never sent to the host


# --- basisit verify end to end ----------------------------------------------------------------


@needs_ssh
def test_verify_reports_refused_hosts_unreachable_exit_3(tmp_path):
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory", inv, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
    (inv / "waivers.yaml").write_text("waivers: []\n", encoding="utf-8")
    state = tmp_path / "state"
    fake_facts(state, "nalbach")
    p = cli("--kommune", "nalbach", "--jobs", "1", "--connect-timeout", "1", state=state, inventory=inv)
    assert p.returncode == results.EXIT_UNREACHABLE, p.stdout + p.stderr
    assert "0 fail" in p.stdout and "UNREACHABLE nalbach-gw" in p.stdout
    (run_dir,) = (state / "reports" / "runs").iterdir()
    doc = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert doc["summary"]["fail"] == 0 and doc["summary"]["unreachable"] == doc["summary"]["total"] > 0
    assert doc["run"]["exit_status"] == 3
    root = ET.parse(run_dir / "junit.xml").getroot()
    assert root.get("failures") == "0" and int(root.get("errors")) == doc["summary"]["total"]
    assert {e.get("type") for e in root.iter("error")} == {"unreachable"} and not list(root.iter("failure"))
    (run,) = history.runs(state / "history.sqlite")
    assert run["fail"] == 0 and run["unreachable"] == doc["summary"]["total"] and run["exit_status"] == 3
    html = (state / "reports" / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert '<span class="pill unreachable">unreachable</span>' in html


def test_history_migrates_a_database_without_unreachable(tmp_path):
    """A history.sqlite written before `unreachable` existed takes the new state and keeps its rows."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    verify_schema = history.SCHEMA.split("CREATE TABLE IF NOT EXISTS drift_runs")[0]  # drift came later still
    old = re.sub(r",(\s*--[^\n]*)?\n\s*unreachable INTEGER NOT NULL DEFAULT 0", r"\1", verify_schema)
    old = old.replace(", 'unreachable'", "")
    assert "unreachable" not in old
    con = sqlite3.connect(db)
    con.executescript(old)
    con.execute(
        "INSERT INTO runs VALUES ('a','2026-11-10T01:30:00+00:00','x','[\"nalbach\"]',1,1,0,0,0,100.0,0,'/x',0)"
    )
    con.execute("INSERT INTO results VALUES ('a','nalbach','nalbach-gw','m::t','n','', 'pass',0.1,'','[]',NULL)")
    con.execute("INSERT INTO run_kommunen VALUES ('a','nalbach',1,1,0,0,0,100.0)")
    con.commit()
    con.close()
    r = results.Result("n2", "m::t", "nalbach-gw", "nalbach", [], "unreachable", message="nalbach-gw: unreachable")
    history.append(
        db,
        {
            "id": "b",
            "started": "2026-11-11T01:30:00+00:00",
            "finished": "x",
            "selection": ["nalbach"],
            "exit_status": 3,
            "report_dir": "/y",
        },
        [r],
    )
    assert [x["state"] for x in history.results_of(db, "a", "nalbach")] == ["pass"]
    assert [x["state"] for x in history.results_of(db, "b", "nalbach")] == ["unreachable"]
    assert history.latest(db)["nalbach"]["unreachable"] == 1


def test_a_run_closes_the_shared_masters_only_when_alone(tmp_path):
    """Two verify runs on one state directory share the master connections: the one that ends
    first must not close them under the other (that was a source of 255s under load)."""
    second = targets.run_lock(tmp_path)
    with targets.run_lock(tmp_path) as first_alone:
        second_alone = second.__enter__()
        assert not first_alone()  # the first run ends while the second still runs: masters stay
    assert second_alone()  # the second ends alone: it closes them
    second.__exit__(None, None, None)


def test_ssh_config_is_replaced_atomically(tmp_path):
    from test_verify_cli import fake_facts

    from basisit.validate import load_estate

    fake_facts(tmp_path, "nalbach")
    hosts = targets.hosts_of(load_estate(ROOT / "inventory"), tmp_path, ["nalbach"])
    p = targets.write_ssh_config(hosts, tmp_path, 3)
    inode = p.stat().st_ino
    p2 = targets.write_ssh_config(hosts, tmp_path, 4)
    assert p2 == p and p.stat().st_ino != inode and (p.stat().st_mode & 0o777) == 0o600
    assert "ConnectTimeout 4" in p.read_text(encoding="utf-8")
    assert [x.name for x in p.parent.iterdir() if x.name.startswith(".ssh_config")] == []
