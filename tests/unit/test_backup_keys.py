"""Keys apart from storage (issue 12, item 1): the repository host keeps bcrypt hashes only, the
maintenance identity on the management host holds the repository passwords and reaches the
repository host's maintenance listener, which the allow matrix admits from there alone.

The htpasswd helper (roles/backup_server/files/basisit-htpasswd) runs on the backup host with
Debian 12's python3; here it runs with the same libxcrypt.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from basisit import policy
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "roles" / "backup_server" / "files" / "basisit-htpasswd"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


def _load_helper():
    loader = importlib.machinery.SourceFileLoader("basisit_htpasswd", str(HELPER))
    spec = importlib.util.spec_from_loader("basisit_htpasswd", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


H = _load_helper()
PW = {"nalbach": "Nalbach-secret.1234567890", "bous": "Bous_secret,0987654321abc"}


def _stdin(pairs: dict[str, str]) -> str:
    return "".join(f"{u} {p}\n" for u, p in pairs.items())


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8"))


def test_entries_are_bcrypt_and_verify(tmp_path):
    text = H.render(H.parse(_stdin(PW)), {}, 4)
    entries = dict(line.split(":", 1) for line in text.splitlines())
    assert list(entries) == ["nalbach", "bous"]
    for user, hashed in entries.items():
        assert hashed.startswith("$2b$04$")
        assert crypt.crypt(PW[user], hashed) == hashed
        assert crypt.crypt(PW[user] + "x", hashed) != hashed
        assert PW[user] not in text


def test_a_matching_hash_is_kept_and_others_rehashed(tmp_path):
    first = H.render(H.parse(_stdin(PW)), {}, 4)
    f = tmp_path / "htpasswd"
    f.write_text(first + "former:$2b$04$abcdefghijklmnopqrstuu0123456789012345678901234567890\n", encoding="utf-8")
    again = H.render(H.parse(_stdin(PW)), H.read(str(f)), 4)
    assert again == first  # idempotent: nothing rehashed, a dropped user is gone
    changed = dict(PW, bous="Another-secret.1234567")
    third = dict(line.split(":", 1) for line in H.render(H.parse(_stdin(changed)), H.read(str(f)), 4).splitlines())
    assert third["nalbach"] == dict(line.split(":", 1) for line in first.splitlines())["nalbach"]
    assert crypt.crypt(changed["bous"], third["bous"]) == third["bous"]


def test_an_apr1_entry_is_replaced_by_bcrypt(tmp_path):
    f = tmp_path / "htpasswd"
    apr1 = subprocess.run(
        ["openssl", "passwd", "-apr1", "-salt", "abcdefgh", "-stdin"],
        input=PW["nalbach"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    f.write_text(f"nalbach:{apr1}\n", encoding="utf-8")
    out = H.render(H.parse(_stdin({"nalbach": PW["nalbach"]})), H.read(str(f)), 4)
    assert out.startswith("nalbach:$2b$04$") and apr1 not in out


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("Nalbach secret123456\n", "line 1: not a user name"),
        ("nalbach\n", "line 1 (nalbach): empty password"),
        ("bous ok-secret-12345\nnalbach a:b\n", "line 2 (nalbach): empty password or one with blanks or ':'"),
        ("bous one-secret-12345\nbous two-secret-12345\n", "line 2: bous given twice"),
    ],
)
def test_bad_input_is_named_by_line_never_by_value(stdin, message, tmp_path):
    p = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / "htpasswd"), "4"], input=stdin, capture_output=True, text=True
    )
    assert p.returncode == 2 and message in p.stderr and p.stdout == ""
    assert "-secret-" not in p.stderr and "secret123456" not in p.stderr


@pytest.mark.parametrize("argv", [["x"], ["x", "f", "three"], ["x", "f", "3"], ["x", "f", "16"]])
def test_bad_arguments_exit_2(argv):
    assert H.main(argv, "nalbach secret-1234567890\n") == 2


def test_empty_stdin_exits_2(tmp_path):
    assert H.main(["x", str(tmp_path / "h")], "\n") == 2


def test_the_helper_runs_as_a_program(tmp_path):
    p = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / "htpasswd"), "4"], input=_stdin(PW), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert [ln.split(":")[0] for ln in p.stdout.splitlines()] == ["nalbach", "bous"]
    assert "DeprecationWarning" not in p.stderr


def test_maintenance_listener_is_what_the_matrix_admits_and_the_retention_uses():
    server, retention = _defaults("backup_server"), _defaults("backup_retention")
    estate = load_estate(ROOT / "inventory")
    (rule,) = [r for r in estate.standard.allow if r.name == "backup-maintenance"]
    assert rule.ports == [server["backup_server_maintenance_port"]] == [retention["backup_retention_port"]]
    assert server["backup_server_maintenance_user"] == retention["backup_retention_user"]
    assert server["backup_server_maintenance_secret"] == retention["backup_retention_maintenance_secret"]
    assert server["backup_server_kommunen"] == retention["backup_retention_kommunen"]
    assert server["backup_server_maintenance_port"] != estate.standard.services.backup.repository_port


def test_only_the_management_host_reaches_the_maintenance_listener():
    estate = load_estate(ROOT / "inventory")
    port = _defaults("backup_server")["backup_server_maintenance_port"]
    reaching = {
        (f.rule, f.src_hosts, f.dst_hosts)
        for site in estate.sites
        for f in policy.flows(estate, site)
        if f.port == port and f.proto == "tcp"
    }
    assert reaching == {("backup-maintenance", ("zentral-mgmt",), ("zentral-backup",))}
    backup = estate.zentral.host("backup")
    (inb,) = [r for r in policy.inbound_rules(estate, backup) if port in r["ports"]]
    assert inb["src"] == [f"{estate.zentral.host('mgmt').address}/32"]
    gw = estate.zentral.hosts_with_role("zentral_gateway")[0]
    assert [r["rule"] for r in policy.forward_rules(estate, gw) if port in r["ports"]] == ["backup-maintenance"]


def test_no_repository_password_in_the_backup_server_role():
    """The backup_server role reads no repository password (only REST credentials); the retention
    role on the management host does."""
    server = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "roles" / "backup_server").rglob("*.y*ml"))
    server += "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "roles" / "backup_server").rglob("*.j2"))
    assert "restic-repository" not in server and "RESTIC_PASSWORD" not in server
    retention = (ROOT / "roles" / "backup_retention" / "tasks" / "job.yml").read_text(encoding="utf-8")
    assert "restic-repository" in retention
