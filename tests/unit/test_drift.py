"""`basisit drift` without the lab, but for real: ansible-playbook in check mode with diff, the
drift recorder (plugins/callback/basisit_drift.py), the JSON report, the history and the
dashboard, against files in a temporary directory (`ansible_connection=local`).

The tiny playbook stands in for site.yml: it templates a config file, manages a line, creates a
directory and writes a file from a secret with `no_log`. First converge, then a hand edit, then
`basisit drift` must name exactly that host, task and file with the diff; after a converge, no
drift; a secret never appears in what drift writes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import model_hosts

from basisit import sitefacts
from basisit.drift import redact
from basisit.validate import load_estate
from basisit.verify import history

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cr3t-" + secrets.token_hex(8)  # the no_log task's value; must never be written by drift
KNOWN = "Kn0wn-" + secrets.token_hex(8)  # a value in <state>/secrets/: masked wherever it appears

PLAYBOOK = """\
- name: Tiny converge
  hosts: all
  gather_facts: false
  tasks:
    - name: Managed config
      ansible.builtin.copy:
        dest: "{{ root }}/etc/app.conf"
        content: "PermitRootLogin no\\nMaxAuthTries 3\\n"
        mode: "0644"
    - name: Managed directory
      ansible.builtin.file:
        path: "{{ root }}/etc/app.d"
        state: directory
        mode: "0755"
    - name: Banner line
      ansible.builtin.lineinfile:
        path: "{{ root }}/etc/banner"
        line: "Authorised use only"
        create: true
        mode: "0644"
    - name: Service password
      ansible.builtin.copy:
        dest: "{{ root }}/etc/service.secret"
        content: "{{ secret }}\\n"
        mode: "0600"
      no_log: true
    - name: Known secret in a config
      ansible.builtin.copy:
        dest: "{{ root }}/etc/known.conf"
        content: "backend = {{ known }}\\n"
        mode: "0600"
"""


def fake_facts(state: Path, slug: str, port: int = 22) -> None:
    estate = load_estate(ROOT / "inventory")
    site = estate.site(slug)
    hosts = model_hosts(site, ansible_port=port)
    ssh = {
        "user": "root",
        "private_key_file": str(state / "lab" / "id_ed25519"),
        "known_hosts_file": str(state / "lab" / "known_hosts"),
        "common_args": "-o IdentitiesOnly=yes",
    }
    sitefacts.write(state, sitefacts.build(site, "lab", estate.standard.version, hosts, ssh))


def _site(tmp_path: Path) -> dict:
    """Two local hosts of `nalbach` (each its own root directory), its site facts, a known secret."""
    state = tmp_path / "state"
    fake_facts(state, "nalbach")
    (state / "secrets" / "nalbach").mkdir(parents=True)
    (state / "secrets" / "nalbach" / "backend.secret").write_text(KNOWN + "\n", encoding="utf-8")
    roots = {h: tmp_path / h for h in ("nalbach-t1", "nalbach-t2")}
    for r in roots.values():
        (r / "etc").mkdir(parents=True)
    hosts = {
        h: {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "root": str(r),
            "secret": SECRET,
            "known": KNOWN,
        }
        for h, r in roots.items()
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"nalbach": {"hosts": hosts}}), encoding="utf-8")
    playbook = tmp_path / "site.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    return {"state": state, "inventory": inventory, "playbook": playbook, "roots": roots, "tmp": tmp_path}


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """The two hosts as they are before any converge."""
    return _site(tmp_path)


@pytest.fixture(scope="module")
def converged_roots(tmp_path_factory) -> dict[str, Path]:
    """The hosts' root directories after one real converge of the tiny playbook (asserted to pass),
    run once for the module: what `converge(site)` leaves is the same files for every test."""
    s = _site(tmp_path_factory.mktemp("converged"))
    converge(s)
    return s["roots"]


@pytest.fixture
def converged(site: dict, converged_roots: dict[str, Path]) -> dict:
    """`site` after a converge: a copy (contents and modes) of the module's converged roots. The
    playbook writes no path of its root into a file, so the copy is what a converge here writes."""
    for host, root in site["roots"].items():
        shutil.copytree(converged_roots[host], root, dirs_exist_ok=True)
    return site


def _env() -> dict:
    # the test inventory is plain YAML; the project's ansible.cfg enables only the basisit plugin
    return os.environ | {"ANSIBLE_INVENTORY_ENABLED": "yaml", "ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-drift-test"}


def converge(s: dict) -> None:
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    p = subprocess.run(
        [exe, "-i", str(s["inventory"]), str(s["playbook"])],
        cwd=ROOT,
        env=_env() | {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def drift(s: dict, *extra: str) -> tuple[int, str, str, dict]:
    p = subprocess.run(
        [sys.executable, "-m", "basisit.cli", "--state", str(s["state"]), "drift", "--kommune", "nalbach",
         "--playbook", str(s["playbook"]), "--ansible-inventory", str(s["inventory"]), *extra],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    runs = sorted((s["state"] / "reports" / "drift").glob("*/drift.json"))
    doc = json.loads(runs[-1].read_text(encoding="utf-8")) if runs else {}
    return p.returncode, p.stdout, p.stderr, doc


def everything_written(s: dict) -> str:
    """Every byte drift left in the state directory (reports, logs, dashboard, history), as text."""
    parts = []
    for f in (s["state"] / "reports").rglob("*"):
        if f.is_file():
            parts.append(f.read_text(encoding="utf-8", errors="replace"))
    con = sqlite3.connect(history.path_in(s["state"]))
    parts += [repr(r) for r in con.execute("SELECT * FROM drift_changes")]
    con.close()
    return "\n".join(parts)


def test_hand_edit_is_drift_with_diff_and_converge_clears_it(converged):
    site = converged
    rc, out, err, doc = drift(site)
    assert rc == 0, out + err
    assert doc["run"]["changes"] == 0 and doc["kommunen"][0]["hosts"] == ["nalbach-t1", "nalbach-t2"]
    assert "nalbach: drift: 0 changes on 0 hosts" in out

    conf = site["roots"]["nalbach-t2"] / "etc" / "app.conf"
    conf.write_text("PermitRootLogin yes\nMaxAuthTries 3\n", encoding="utf-8")  # the hand edit
    rc, out, err, doc = drift(site)
    assert rc == 1, out + err
    (k,) = doc["kommunen"]
    assert [(c["host"], c["task"], c["resource"]) for c in k["changes"]] == [
        ("nalbach-t2", "Managed config", str(conf))
    ]
    diff = k["changes"][0]["diff"]
    assert "-PermitRootLogin yes" in diff and "+PermitRootLogin no" in diff
    assert k["hosts_drifted"] == ["nalbach-t2"] and not k["failed"] and not k["unreachable"]
    assert "nalbach: drift: 1 change on 1 host" in out and f"DRIFT nalbach-t2 Managed config: {conf}" in out
    assert conf.read_text(encoding="utf-8").startswith("PermitRootLogin yes")  # check mode changed nothing

    row = history.latest_drift(history.path_in(site["state"]))["nalbach"]
    assert (row["changes"], row["hosts"]) == (1, 1)
    assert row["items"][0]["host"] == "nalbach-t2" and "+PermitRootLogin no" in row["items"][0]["diff"]
    page = (site["state"] / "reports" / "dashboard" / "kommune" / "nalbach.html").read_text(encoding="utf-8")
    assert "1 change on 1 host" in page and "+PermitRootLogin no" in page and str(conf) in page
    index = (site["state"] / "reports" / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert 'href="kommune/nalbach.html#drift">1 change on 1 host</a>' in index

    converge(site)
    rc, out, err, doc = drift(site)
    assert rc == 0 and doc["run"]["changes"] == 0, out + err
    assert history.latest_drift(history.path_in(site["state"]))["nalbach"]["changes"] == 0


def test_several_edits_on_several_hosts(converged):
    site = converged
    (site["roots"]["nalbach-t1"] / "etc" / "banner").write_text("hello\n", encoding="utf-8")
    shutil.rmtree(site["roots"]["nalbach-t1"] / "etc" / "app.d")
    (site["roots"]["nalbach-t2"] / "etc" / "app.conf").unlink()
    rc, out, err, doc = drift(site)
    assert rc == 1, out + err
    (k,) = doc["kommunen"]
    got = sorted((c["host"], c["task"]) for c in k["changes"])
    assert got == [
        ("nalbach-t1", "Banner line"),
        ("nalbach-t1", "Managed directory"),
        ("nalbach-t2", "Managed config"),
    ]
    banner = next(c for c in k["changes"] if c["task"] == "Banner line")
    assert "+Authorised use only" in banner["diff"]
    dirs = next(c for c in k["changes"] if c["task"] == "Managed directory")
    assert '"state": "absent"' in dirs["diff"] and '"state": "directory"' in dirs["diff"]
    assert "nalbach: drift: 3 changes on 2 hosts" in out


def test_secrets_never_written(converged):
    site = converged
    (site["roots"]["nalbach-t1"] / "etc" / "service.secret").write_text("old\n", encoding="utf-8")
    (site["roots"]["nalbach-t1"] / "etc" / "known.conf").write_text("backend = old\n", encoding="utf-8")
    rc, out, err, doc = drift(site)
    assert rc == 1, out + err
    (k,) = doc["kommunen"]
    by_task = {c["task"]: c for c in k["changes"]}
    assert set(by_task) == {"Service password", "Known secret in a config"}
    hidden = by_task["Service password"]
    assert hidden["no_log"] is True and hidden["diff"] == "" and hidden["resource"] == ""
    known = by_task["Known secret in a config"]
    assert "-backend = old" in known["diff"] and f"+backend = {redact.MASK}" in known["diff"]
    written = everything_written(site) + out + err
    assert SECRET not in written and KNOWN not in written
    assert "Service password" in written


def test_unreachable_host_exit_3(converged):
    """nalbach-t1 converged, nalbach-t2 behind a port nothing answers on."""
    site = converged
    inv = yaml.safe_load(site["inventory"].read_text(encoding="utf-8"))
    inv["nalbach"]["hosts"]["nalbach-t2"] = {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": 1,
        "ansible_ssh_common_args": "-o ConnectTimeout=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        **{k: v for k, v in inv["nalbach"]["hosts"]["nalbach-t1"].items() if k not in ("ansible_connection",)},
    }
    site["inventory"].write_text(yaml.safe_dump(inv), encoding="utf-8")
    rc, out, err, doc = drift(site)
    assert rc == 3, out + err
    (k,) = doc["kommunen"]
    assert [u["host"] for u in k["unreachable"]] == ["nalbach-t2"] and not k["changes"]
    assert "UNREACHABLE nalbach-t2:" in out
    row = history.latest_drift(history.path_in(site["state"]))["nalbach"]
    assert row["unreachable"] == 1 and row["changes"] == 0


def test_broken_playbook_is_an_incomplete_run(site):
    site["playbook"].write_text("- name: x\n  hosts: all\n  tasks:\n    - ansible.builtin.nosuchmodule: {}\n")
    rc, out, err, doc = drift(site)
    assert rc == 1, out + err
    (k,) = doc["kommunen"]
    assert k["error"] and "before any host ran" in k["error"]
    assert "run incomplete" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing selected; name Kommunen with --kommune SLUG"),
        (("--kommune", "atlantis"), "unknown Kommune 'atlantis'"),
        (("--wave", "99"), "unknown wave '99'"),
        (("--kommune", "nalbach", "--parallel", "0"), "--parallel 0: expected a positive number"),
        (("--kommune", "tholey"), "tholey: not realised (no site facts in"),
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path, args, message):
    state = tmp_path / "state"
    fake_facts(state, "nalbach")
    p = subprocess.run(
        [sys.executable, "-m", "basisit.cli", "drift", *args, "--state", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (state / "reports").exists() and not (state / "history.sqlite").exists()


def test_redactor_masks_known_values_and_assignments(tmp_path):
    d = tmp_path / "secrets" / "nalbach"
    d.mkdir(parents=True)
    key, pw, psk, body = (secrets.token_urlsafe(24), secrets.token_hex(6), secrets.token_hex(4), secrets.token_hex(5))
    (d / "wg.key").write_text(key + "\n", encoding="utf-8")
    (d / "short").write_text("abc\n", encoding="utf-8")
    r = redact.Redactor.from_dir(tmp_path / "secrets")
    pem = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\n" + body + "\n-----END OPENSSH " + "PRIVATE KEY-----\n"
    text = (
        f"+key: {key}\n+admin_pass" + f"word = {pw}\n+PresharedKey: {psk}\n{pem}PasswordAuthentication no\nabc stays\n"
    )
    got = r.text(text)
    for secret in (key, pw, psk, body):
        assert secret not in got
    assert "+admin_pass" + "word = " + redact.MASK in got
    assert "PasswordAuthentication no" in got and "abc stays" in got


def test_history_drift_tables_on_an_old_database(tmp_path):
    """A history database from before drift gets the drift tables when opened; verify's tables stay."""
    db = tmp_path / "history.sqlite"
    con = sqlite3.connect(db)
    con.executescript(history.SCHEMA.split("CREATE TABLE IF NOT EXISTS drift_runs")[0])
    con.close()
    run = {"id": "r1", "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00",
           "selection": ["nalbach"], "exit_status": 1, "report_dir": "x", "duration": 1.5}  # fmt: skip
    site = {"kommune": "nalbach", "seconds": 1.5, "error": None, "hosts_drifted": ["h"], "failed": [],
            "unreachable": [], "changes": [{"host": "h", "task": "t", "role": "base", "action": "copy",
            "resource": "/etc/x", "item": "", "no_log": False, "diff": "-a\n+b\n"}]}  # fmt: skip
    history.append_drift(db, run, [site])
    row = history.latest_drift(db)["nalbach"]
    assert (row["changes"], row["hosts"], row["items"][0]["resource"]) == (1, 1, "/etc/x")
    assert history.runs(db) == []


def test_product_path_site_yml_unreachable_hosts_exit_3(tmp_path):
    """The product's own path: playbooks/site.yml through the basisit inventory plugin, hosts from
    the site facts; where no host answers, every realised host is unreachable and the exit is 3."""
    state = tmp_path / "state"
    fake_facts(state, "nalbach", port=1)  # nothing answers there, lab or not
    p = subprocess.run(
        [sys.executable, "-m", "basisit.cli", "--state", str(state), "drift", "--kommune", "nalbach"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 3, p.stdout + p.stderr
    (run,) = (state / "reports" / "drift").glob("*/drift.json")
    doc = json.loads(run.read_text(encoding="utf-8"))
    (k,) = doc["kommunen"]
    expected = {h.name for h in load_estate(ROOT / "inventory").site("nalbach").hosts}
    assert {u["host"] for u in k["unreachable"]} == expected and not k["changes"] and not k["error"]
    assert doc["run"]["playbook"] == str(ROOT / "playbooks" / "site.yml")
    index = (state / "reports" / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert 'href="kommune/nalbach.html#drift">unreachable</a>' in index


def test_cloud_drift_that_cannot_run_is_an_incomplete_run(tmp_path):
    """--cloud without a reachable Pulumi backend (no CLI here, or a local backend without the
    stack): the run does not complete, says why, and is recorded as cloud drift, apart from the
    hosts' drift. (The refresh itself needs the engine and a cloud; it is never faked.)"""
    state = tmp_path / "state"
    fake_facts(state, "nalbach")
    backend = tmp_path / "pulumi-backend"
    backend.mkdir()
    env = os.environ | {
        "PULUMI_BACKEND_URL": backend.as_uri(),
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    p = subprocess.run(
        [sys.executable, "-m", "basisit.cli", "--state", str(state), "drift", "--cloud", "--kommune", "nalbach"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "nalbach: cloud drift: 0 resources changed, run incomplete:" in p.stdout
    (run,) = (state / "reports" / "drift").glob("*/drift.json")
    doc = json.loads(run.read_text(encoding="utf-8"))
    assert doc["run"]["source"] == "cloud" and doc["kommunen"][0]["error"]
    db = history.path_in(state)
    assert history.latest_drift(db, "cloud")["nalbach"]["error"] and "nalbach" not in history.latest_drift(db)
    index = (state / "reports" / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert 'href="kommune/nalbach.html#cloud-drift">cloud: incomplete</a>' in index


class _Meta:
    def __init__(self, op, urn, type_, diffs=None, detailed=None):
        self.op, self.urn, self.type, self.diffs, self.detailed_diff = op, urn, type_, diffs, detailed


class _Pre:
    def __init__(self, md):
        self.metadata = md


class _Event:
    def __init__(self, md, outputs=False):
        self.resource_pre_event, self.res_outputs_event = (None, _Pre(md)) if outputs else (_Pre(md), None)


def test_cloud_records_one_per_drifted_resource_names_properties_never_values():
    """The selection of records from engine events (the SDK's OpType values): same/refresh/read and
    the stack are no drift, a URN seen twice is one record, property names only."""
    from pulumi.automation import OpType

    from basisit.drift import cloud

    urn = "urn:pulumi:nalbach::basisit-kommune::openstack:networking/port:Port::nalbach-gw-mgmt"
    events = [
        _Event(_Meta(OpType.SAME, "urn:pulumi:nalbach::p::pulumi:pulumi:Stack::x", "pulumi:pulumi:Stack")),
        _Event(_Meta(OpType.REFRESH, urn, "openstack:networking/port:Port")),
        _Event(_Meta(OpType.UPDATE, urn, "openstack:networking/port:Port", ["securityGroupIds"])),
        _Event(
            _Meta(OpType.UPDATE, urn, "openstack:networking/port:Port", ["securityGroupIds"], {"adminStateUp": {}}),
            True,
        ),
        _Event(_Meta(OpType.DELETE, urn.replace("gw-mgmt", "dc1-disk"), "openstack:blockstorage/volume:Volume")),
    ]
    recs = cloud.records(events, "nalbach")
    assert [(r["host"], r["action"]) for r in recs] == [("nalbach-gw-mgmt", "update"), ("nalbach-dc1-disk", "delete")]
    assert recs[0]["diff"] == "changed: adminStateUp, securityGroupIds" and recs[0]["resource"] == urn
