"""`basisit restore` without a lab: host selection, backends, the steps it runs, its record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import model_hosts

from basisit import restore, sitefacts
from basisit.cli import UsageError
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "ad_dc" / "files" / "basisit-dc-restore"


@pytest.fixture(scope="module")
def estate():
    return load_estate(ROOT / "inventory")


def _facts(state: Path, estate, slug: str, backend: str) -> None:
    site = estate.site(slug)
    hosts = model_hosts(site)
    sitefacts.write(state, sitefacts.build(site, backend, estate.standard.version, hosts))


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(ROOT / "inventory"), "--state", str(state)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_dc_host_by_short_or_inventory_name(estate):
    site = estate.site("nalbach")
    assert restore.dc_host(site, "dc1").name == "nalbach-dc1"
    assert restore.dc_host(site, "nalbach-dc1").short == "dc1"


def test_dc_host_refuses_other_roles_and_unknown_names(estate):
    site = estate.site("nalbach")
    with pytest.raises(UsageError, match="nalbach-gw has roles gateway; restore rebuilds domain controllers"):
        restore.dc_host(site, "gw")
    with pytest.raises(UsageError, match="no host 'dc2'; its domain controllers: dc1"):
        restore.dc_host(site, "dc2")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    p = _cli("restore", "--kommune", "nalbach", "--host", "gw", state=tmp_path)
    assert p.returncode == 2 and "restore rebuilds domain controllers" in p.stderr and "Traceback" not in p.stderr
    p = _cli("restore", "--kommune", "nowhere", "--host", "dc1", state=tmp_path)
    assert p.returncode == 2 and "unknown Kommune 'nowhere'" in p.stderr
    p = _cli("restore", "--kommune", "nalbach", "--host", "dc1", state=tmp_path)
    assert p.returncode == 2 and "no site facts" in p.stderr and "not realised" in p.stderr


def test_cloud_backend_prints_the_engine_replacement_and_runs_nothing(tmp_path, estate):
    _facts(tmp_path, estate, "nalbach", "cloud")
    with pytest.raises(restore.RestoreError) as e:
        restore.restore(estate, "nalbach", "dc1", tmp_path, ROOT / "inventory", out=lambda _l: None)
    msg = str(e.value)
    urn = "urn:pulumi:nalbach::basisit-kommune::basisit:cloud:Servers$openstack:compute/instance:Instance::nalbach-dc1"
    assert f"up --stack nalbach --replace '{urn}'" in msg
    assert "basisit restore --kommune nalbach --host dc1 --host-ready" in msg
    assert not list((tmp_path / "reports" / "restore").glob("*/*.log")), "a step ran"


class FakeRunner:
    """Records the commands; fails the step named in `fail`."""

    calls: ClassVar[list[list[str]]] = []
    fail = ""

    def __init__(self, inventory, state, out_dir, control_dir):
        self.inventory, self.state = inventory, state
        self.out_dir = out_dir
        self.control_dir = control_dir

    def run(self, step, argv):
        FakeRunner.calls.append([step, *argv])
        assert Path(self.control_dir).is_dir()
        if step == FakeRunner.fail:
            raise restore.RestoreError(f"{step}: exited 2: fatal: [nalbach-dc1]: FAILED! msg: boom")
        return str(self.out_dir / f"{step}.log")

    playbook = restore.Runner.playbook
    basisit = restore.Runner.basisit


@pytest.fixture
def fake(monkeypatch):
    FakeRunner.calls, FakeRunner.fail = [], ""
    monkeypatch.setattr(restore, "Runner", FakeRunner)
    return FakeRunner


def test_steps_with_host_ready_restore_the_named_dc_converge_the_kommune_and_verify(tmp_path, estate, fake):
    _facts(tmp_path, estate, "nalbach", "cloud")
    run = restore.restore(estate, "nalbach", "dc1", tmp_path, ROOT / "inventory", host_ready=True, out=lambda _l: None)
    assert run.ok
    (step1, *argv1), (step2, *argv2) = fake.calls
    assert step1 == "restore" and argv1[-4:] == ["-l", "nalbach", "-e", "restore_dc_host=nalbach-dc1"]
    assert argv1[argv1.index("-l") + 1] == "nalbach" and str(ROOT / "playbooks" / "restore-dc.yml") in argv1
    assert step2 == "verify" and argv2[-3:] == ["verify", "--kommune", "nalbach"]
    doc = json.loads((run.out_dir / "restore.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in doc["steps"]] == ["recreate", "restore", "verify"]
    assert doc["steps"][0]["result"] == "skipped" and doc["result"] == "ok"


def test_dc_only_limits_the_converge_to_the_dc(tmp_path, estate, fake):
    _facts(tmp_path, estate, "nalbach", "lab")
    restore.restore(
        estate, "nalbach", "nalbach-dc1", tmp_path, ROOT / "inventory", host_ready=True, dc_only=True, verify=False,
        out=lambda _l: None,
    )  # fmt: skip
    ((_step, *argv),) = fake.calls
    assert argv[argv.index("-l") + 1] == "nalbach-dc1"


def test_a_failed_step_ends_the_run_and_is_recorded(tmp_path, estate, fake):
    _facts(tmp_path, estate, "nalbach", "lab")
    fake.fail = "restore"
    lines: list[str] = []
    run = restore.restore(estate, "nalbach", "dc1", tmp_path, ROOT / "inventory", host_ready=True, out=lines.append)
    assert not run.ok and [c[0] for c in fake.calls] == ["restore"], "verify ran after a failed restore"
    doc = json.loads((run.out_dir / "restore.json").read_text(encoding="utf-8"))
    assert doc["result"] == "failed" and doc["steps"][-1]["detail"].endswith("msg: boom")
    assert any("restore FAILED" in ln for ln in lines)


def test_last_lines_gives_ansibles_failure_with_its_message(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "TASK [x]\nfatal: [nalbach-dc1]: FAILED! =>\n    changed: false\n    msg: nalbach-dc1 holds a domain\n"
        "PLAY RECAP\nnalbach-dc1 : ok=1 failed=1\n",
        encoding="utf-8",
    )
    assert restore._last_lines(log) == "fatal: [nalbach-dc1]: FAILED! => msg: nalbach-dc1 holds a domain"
    log.write_text("only line\n", encoding="utf-8")
    assert restore._last_lines(log) == "only line"


def test_restore_script_refuses_bad_arguments_and_a_live_database(tmp_path):
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 2 and "no backup file" in p.stderr
    backup = tmp_path / "samba-backup-x.tar.bz2"
    backup.write_bytes(b"")
    p = subprocess.run(["bash", str(SCRIPT), "--backup-file", str(backup)], capture_output=True, text=True)
    assert p.returncode == 2 and "--server-name is required" in p.stderr
    live = tmp_path / "samba" / "private"
    live.mkdir(parents=True)
    (live / "sam.ldb").write_bytes(b"x")
    p = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--backup-file",
            str(backup),
            "--server-name",
            "dc1",
            "--samba-dir",
            str(tmp_path / "samba"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 3 and "refusing to replace it" in p.stderr
    assert (live / "sam.ldb").read_bytes() == b"x"


def test_lab_destroy_unknown_host_is_a_usage_error(tmp_path):
    p = _cli("lab", "destroy", "--kommune", "nalbach", "--host", "dc7", state=tmp_path)
    assert p.returncode == 2 and "no host 'dc7'" in p.stderr


def test_benchmark_row_from_a_restore_result(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import report
    import restore as bench_restore

    doc = {
        "kommune": "nalbach",
        "host": "nalbach-dc1",
        "backend": "lab",
        "result": "ok",
        "steps": [
            {"name": "recreate", "seconds": 20.0, "result": "ok"},
            {"name": "restore", "seconds": 250.0, "result": "ok"},
            {"name": "verify", "seconds": 60.0, "result": "ok"},
        ],
    }
    bench_restore.record(bench_restore.result_doc(doc, 331.0), tmp_path / "restore-lab.json")
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (row,) = report._restore_rows()
    assert row[1] == "331 s" and "target 300 s missed" in row[2] and "restore 250 s" in row[2]
