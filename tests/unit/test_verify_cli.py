"""`basisit verify` end to end without the lab: bad input, not-realised Kommunen, the ssh_config,
and a run against hosts that do not answer (they are reported unreachable within the connect
timeout and its one retry, never as failed checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import model_hosts

from basisit import sitefacts
from basisit.validate import load_estate
from basisit.verify import history, targets

ROOT = Path(__file__).resolve().parents[2]


def fake_facts(state: Path, slug: str, port: int = 1) -> dict:
    """Site facts for `slug` at the model's addresses (as the lab writes them) but an SSH port
    nothing answers on: whether or not a lab is up, the hosts do not answer SSH."""
    estate = load_estate(ROOT / "inventory")
    site = estate.site(slug)
    hosts = model_hosts(site, ansible_port=port)
    ssh = {
        "user": "root",
        "private_key_file": str(state / "lab" / "id_ed25519"),
        "known_hosts_file": str(state / "lab" / "known_hosts"),
        "common_args": "-o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o ServerAliveInterval=7",
    }
    doc = sitefacts.build(site, "lab", estate.standard.version, hosts, ssh)
    sitefacts.write(state, doc)
    return doc


def cli(*args: str, state: Path, inventory: Path = ROOT / "inventory", timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "basisit.cli", "--inventory", str(inventory), "--state", str(state), "verify", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing selected; name Kommunen with --kommune SLUG"),
        (("--kommune", "atlantis"), "unknown Kommune 'atlantis'"),
        (("--wave", "99"), "unknown wave '99'"),
        (("--kommune", "nalbach", "--jobs", "0"), "--jobs 0: expected a positive number"),
    ],
)
def test_bad_input_is_one_line_exit_2(run, tmp_path, args, message):
    rc, _out, err = run("--state", tmp_path, "verify", *args)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_not_realised_kommune_exit_2(run, tmp_path):
    rc, _, err = run("--state", tmp_path, "verify", "--kommune", "tholey")
    assert rc == 2
    assert "tholey: not realised (no site facts in" in err and "basisit lab up" in err


def test_wave_leaves_out_unrealised_but_needs_one(run, tmp_path):
    rc, _, err = run("--state", tmp_path, "verify", "--wave", "modell")
    assert rc == 2 and "not realised" in err


def test_bad_waiver_file_names_file_entry_field(run, inv, tmp_path):
    (inv / "waivers.yaml").write_text(
        yaml.safe_dump({"waivers": [{"id": "gs:SYS.1.3.A8", "scope": {"kommune": "nalbach"}, "expires": "soon"}]}),
        encoding="utf-8",
    )
    rc, _, err = run("--inventory", inv, "--state", tmp_path, "verify", "--kommune", "nalbach")
    assert rc == 2
    assert f"{inv / 'waivers.yaml'}: waivers[0] (gs:SYS.1.3.A8): justification: is missing" in err
    assert "approver: is missing" in err and "expires:" in err


def test_check_waivers_lists_expiry(run, inv, tmp_path):
    (inv / "waivers.yaml").write_text(
        yaml.safe_dump(
            {
                "waivers": [
                    {
                        "id": "cis-deb12:3.3.1",
                        "scope": {"role": "gateway"},
                        "justification": "Routing is the gateway's job (CIS 3.3.1 conflicts).",
                        "approver": "eGo-Saar ISB",
                        "expires": "2000-01-01",
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    rc, out, _ = run("--inventory", inv, "--state", tmp_path, "verify", "--check-waivers")
    assert rc == 0 and "cis-deb12:3.3.1  [role=gateway]  until 2000-01-01 (EXPIRED)" in out


def test_ssh_config_effective_options(tmp_path):
    """The generated ssh_config, as OpenSSH itself reads it (`ssh -G`)."""
    state = tmp_path / "state"
    fake_facts(state, "nalbach", 2222)
    estate = load_estate(ROOT / "inventory")
    hosts = targets.hosts_of(estate, state, ["nalbach"])
    cfg = targets.write_ssh_config(hosts, state, connect_timeout=5)
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    out = subprocess.run(
        ["ssh", "-G", "-F", str(cfg), "nalbach-dc1"], capture_output=True, text=True, check=True
    ).stdout
    opts = {}
    for ln in out.splitlines():
        k, _, v = ln.partition(" ")
        opts.setdefault(k, v)
    assert opts["hostname"] == "10.160.168.74" and opts["port"] == "2222" and opts["user"] == "root"
    assert opts["identityfile"] == str(state / "lab" / "id_ed25519")
    assert opts["userknownhostsfile"].split()[0] == str(state / "lab" / "known_hosts")
    assert opts["stricthostkeychecking"] in ("true", "yes") and opts["batchmode"] == "yes"
    assert opts["connecttimeout"] == "5" and opts["controlmaster"] == "auto" and opts["controlpersist"] == "120"
    assert opts["serveraliveinterval"] == "7"  # from the facts' common_args, which win over the defaults
    assert opts["controlpath"].startswith(str(targets.control_dir(state)))


def test_control_path_stays_short_for_long_state_dirs(tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    d = targets.control_dir(deep)
    assert len(str(d)) + targets.SOCKET_NAME <= targets.SOCKET_MAX
    assert targets.control_dir(deep) == d  # stable per state dir


@pytest.fixture(scope="module")
def unreachable_run(tmp_path_factory):
    """One verify run on nalbach whose hosts refuse SSH, with a valid waiver (it must not apply:
    an unreachable check is not a failure) and an expired one (it fails the run on its own)."""
    base = tmp_path_factory.mktemp("verify")
    inv = base / "inventory"
    shutil.copytree(ROOT / "inventory", inv, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
    (inv / "waivers.yaml").write_text(
        yaml.safe_dump(
            {
                "waivers": [
                    {
                        "id": "devsec:sshd-27",
                        "scope": {"kommune": "nalbach", "host": "nalbach-gw"},
                        "justification": "Covers a finding on the gateway; an unreachable check is none.",
                        "approver": "test",
                        "expires": "2999-12-31",
                    },
                    {
                        "id": "cis-deb12:5.1.14",
                        "scope": {"kommune": "nalbach"},
                        "justification": "An expired waiver must fail the run on its own.",
                        "approver": "test",
                        "expires": "2001-01-01",
                    },
                ]
            }
        ),
        encoding="utf-8",
    )
    state = base / "state"
    fake_facts(state, "nalbach")
    t0 = time.monotonic()
    p = cli("--kommune", "nalbach", "--jobs", "1", "--connect-timeout", "2", state=state, inventory=inv)
    return p, state, time.monotonic() - t0


def test_unreachable_hosts_are_unreachable_not_failed(unreachable_run):
    p, state, _ = unreachable_run
    assert p.returncode == 1, p.stdout + p.stderr  # the expired waiver fails; nothing else does
    assert "nalbach-gw: unreachable over ssh at 10.160.168.1: " in p.stdout and "(retried once)" in p.stdout
    assert "UNREACHABLE nalbach-dc1 (" in p.stdout
    (run_dir,) = (state / "reports" / "runs").iterdir()
    doc = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    hosts = {h["name"] for h in doc["run"]["hosts"]}
    assert hosts == {h.name for h in load_estate(ROOT / "inventory").site("nalbach").hosts}
    assert all(h["reachable"] is False for h in doc["run"]["hosts"])
    reach = [r for r in doc["results"] if r["test_id"] == "test_base::test_ssh_reachable"]
    assert {r["host"] for r in reach} == hosts and all(r["state"] == "unreachable" for r in reach)
    checks = [r for r in doc["results"] if r["test_id"] != "waivers::expired"]
    assert checks and {r["state"] for r in checks} == {"unreachable"}
    assert doc["summary"]["unreachable"] == len(checks) and doc["summary"]["fail"] == 1  # the expired waiver
    sshd = [r for r in doc["results"] if r["test_id"] == "test_base::test_sshd_option" and r["host"] == "nalbach-dc1"]
    assert sshd and all("unreachable over ssh at 10.160.168.74" in r["message"] for r in sshd)


def test_waiver_never_covers_unreachable_and_expired_waiver_fails(unreachable_run):
    _p, state, _ = unreachable_run
    (run_dir,) = (state / "reports" / "runs").iterdir()
    doc = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert not [r for r in doc["results"] if r["state"] == "waived"]
    gw = [r for r in doc["results"] if r["host"] == "nalbach-gw" and "devsec:sshd-27" in r["controls"]]
    assert gw and all(r["state"] == "unreachable" and r["waiver"] is None for r in gw)
    expired = [r for r in doc["results"] if r["test_id"] == "waivers::expired"]
    assert len(expired) == 1 and expired[0]["state"] == "fail" and expired[0]["controls"] == ["cis-deb12:5.1.14"]


def test_reports_history_dashboard_written(unreachable_run):
    p, state, _ = unreachable_run
    (run_dir,) = (state / "reports" / "runs").iterdir()
    root = ET.parse(run_dir / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    dc1 = suites["nalbach/nalbach-dc1"]
    assert int(dc1.get("errors")) == int(dc1.get("tests")) > 0 and dc1.get("failures") == "0"
    errors = [c.find("error") for c in dc1.iter("testcase")]
    assert all(e is not None and e.get("type") == "unreachable" for e in errors)
    run = history.runs(state / "history.sqlite")[0]
    assert run["fail"] == 1 and run["unreachable"] > 0 and run["pass"] == 0
    assert (state / "reports" / "dashboard" / "index.html").exists()
    page = (state / "reports" / "dashboard" / "kommune" / "nalbach.html").read_text(encoding="utf-8")
    assert "Unreachable hosts" in page and "unreachable over ssh at 10.160.168.74" in page
    assert "run " in p.stdout and "gated (role feature not landed" in p.stdout


def test_unreachable_reported_within_connect_timeout(tmp_path):
    """A host that does not answer is reported unreachable after the connect timeout and one retry."""
    state = tmp_path / "state"
    fake_facts(state, "nalbach", 22)
    estate = load_estate(ROOT / "inventory")
    hosts = [h for h in targets.hosts_of(estate, state, ["nalbach"]) if h.check]
    cfg = targets.write_ssh_config(hosts, state, connect_timeout=1)
    t0 = time.monotonic()
    targets.probe_all(hosts, cfg, connect_timeout=1)
    assert time.monotonic() - t0 < 12
    assert all(h.reachable is False and f"unreachable over ssh at {h.address}: " in h.error for h in hosts)
    assert all(targets.ssh_error(h.error) and h.error.endswith("(retried once)") for h in hosts)


def test_zentral_not_realised_exit_2(run, tmp_path):
    rc, _, err = run("--state", tmp_path, "verify", "--zentral")
    assert rc == 2 and "zentral: not realised" in err


def test_longest_control_socket_path_binds():
    """A control directory of the longest length control_dir keeps still takes ssh's temporary socket name."""
    import socket
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="bcm-"))
    try:
        d = base / ("d" * (targets.SOCKET_MAX - targets.SOCKET_NAME - len(str(base)) - 1))
        d.mkdir()
        path = f"{d}/{'c' * 40}.{'r' * 16}"
        assert len(path) == targets.SOCKET_MAX
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
    finally:
        shutil.rmtree(base)
