"""The helpers that apply a rotated secret on the site, run for real on this host.

basisit-restic-rekey (roles/backup_retention) against a local restic repository: the new key is
added with the old password, the old key removed only once the new one opens the repository,
every step idempotent, the repository never without a working key. basisit-samba-password
(roles/ad_dc) against a throwaway Samba domain database: it compares the stored NT hash with the
secret on stdin and resets the password only when they differ. Both need the Debian packages the
lab hosts have (restic; python3-samba with samba-ad-provision); without them the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

REKEY = ROOT / "roles" / "backup_retention" / "files" / "basisit-restic-rekey"
SAMBA_PASSWORD = ROOT / "roles" / "ad_dc" / "files" / "basisit-samba-password"
OLD, NEW = "Old-repo.0123456789abc", "New-repo.9876543210xyz"


def _samba_python() -> bool:
    py = Path("/usr/bin/python3")
    return py.exists() and subprocess.run([py, "-c", "import samba.samdb"], capture_output=True).returncode == 0


@pytest.fixture
def repo(tmp_path):
    if not shutil.which("restic"):
        pytest.skip("restic is not installed (apt-get install restic)")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "repo-passwords").write_text(f"bous Bous-0123456789.abc\nnalbach {OLD}\n", encoding="utf-8")
    env = dict(os.environ, RESTIC_REPOSITORY=str(tmp_path / "repo"), RESTIC_CACHE_DIR=str(tmp_path / "cache"),
               BASISIT_RETENTION_CONF=str(conf))  # fmt: skip
    env.pop("RESTIC_PASSWORD", None)
    return tmp_path, conf, env


def _restic(env, password: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["restic", "--password-file", "/dev/stdin", *args], input=password + "\n", env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _rekey(env, mode: str, old: str = OLD, new: str = NEW, slug: str = "nalbach") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REKEY), slug, mode], input=f"{old}\n{new}\n", env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_rekey_switches_the_repository_password_and_never_locks_it(repo):
    tmp, conf, env = repo
    p = _rekey(env, "add")
    assert p.returncode == 0 and p.stdout.startswith("absent:"), p.stdout + p.stderr  # nothing to switch yet
    assert _restic(env, OLD, "init").returncode == 0
    (tmp / "data").write_text("canary\n")
    assert _restic(env, OLD, "backup", str(tmp / "data")).returncode == 0

    p = _rekey(env, "drop")  # before the new key exists: refused, nothing removed
    assert p.returncode == 1 and "run 'add' first" in p.stderr and _restic(env, OLD, "cat", "config").returncode == 0

    p = _rekey(env, "add")
    assert p.returncode == 0 and "changed: nalbach: key of the new password added" in p.stdout, p.stderr
    assert "retention's repository password is the new one" in p.stdout
    assert _restic(env, OLD, "cat", "config").returncode == 0 and _restic(env, NEW, "cat", "config").returncode == 0
    lines = (conf / "repo-passwords").read_text(encoding="utf-8").splitlines()
    assert lines == ["bous Bous-0123456789.abc", f"nalbach {NEW}"]  # the other Kommune's line untouched
    assert oct((conf / "repo-passwords").stat().st_mode & 0o777) == "0o600"
    again = _rekey(env, "add")
    assert again.returncode == 0 and not re.search("^changed:", again.stdout, re.M), again.stdout  # idempotent

    p = _rekey(env, "drop")
    assert p.returncode == 0 and "of the old password removed" in p.stdout, p.stdout + p.stderr
    assert "wrong password" in _restic(env, OLD, "cat", "config").stderr
    keys = _restic(env, NEW, "key", "list", "--json")
    assert keys.returncode == 0 and keys.stdout.count('"id"') == 1
    restored = _restic(env, NEW, "restore", "latest", "--target", str(tmp / "restore"))
    assert restored.returncode == 0 and (tmp / "restore" / str(tmp / "data").lstrip("/")).read_text() == "canary\n"
    again = _rekey(env, "drop")
    assert again.returncode == 0 and not re.search("^changed:", again.stdout, re.M), again.stdout
    for out in (p.stdout + p.stderr, again.stdout + again.stderr):
        assert OLD not in out and NEW not in out


def test_rekey_refuses_bad_input_and_passwords_that_open_nothing(repo):
    _, conf, env = repo
    assert _restic(env, OLD, "init").returncode == 0
    p = _rekey(env, "add", old="Wrong-0123456789.abc", new="Other-0123456789.abc")
    assert p.returncode == 1 and "neither the old nor the new password opens" in p.stderr
    assert "Wrong-" not in p.stderr + p.stdout
    assert _rekey(env, "add", slug="../bous").returncode == 1
    assert _rekey(env, "rotate").returncode == 1
    one = subprocess.run(["bash", str(REKEY), "nalbach", "add"], input=OLD + "\n", env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert one.returncode == 1 and "expected two lines" in one.stderr
    assert (conf / "repo-passwords").read_text(encoding="utf-8").endswith(f"nalbach {OLD}\n")  # unchanged
    env_no_repo = {k: v for k, v in env.items() if k != "RESTIC_REPOSITORY"}
    p = _rekey(env_no_repo, "add")
    assert p.returncode == 1 and "no BASISIT_MAINTENANCE_URL" in p.stderr


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    if not (shutil.which("samba-tool") and _samba_python()):
        pytest.skip("samba-tool and python3-samba are not installed")
    d = tmp_path_factory.mktemp("dc")
    p = subprocess.run(
        ["samba-tool", "domain", "provision", f"--targetdir={d}", "--realm=ROT.TEST", "--domain=ROT",
         "--server-role=dc", "--dns-backend=NONE", "--use-rfc2307", "--adminpass=Init-Passw0rd.x"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    env = dict(os.environ, SMB_CONF_PATH=str(d / "etc" / "smb.conf"))
    return d / "private" / "sam.ldb", env


def _password(domain, password: str, *args: str) -> subprocess.CompletedProcess:
    samdb, env = domain
    return subprocess.run(["/usr/bin/python3", str(SAMBA_PASSWORD), "--samdb", str(samdb), *args],
                          input=password + "\n", env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_samba_password_is_reset_only_when_it_differs(domain):
    assert _password(domain, "Init-Passw0rd.x", "Administrator").stdout == "unchanged: Administrator\n"
    p = _password(domain, "Rotated-Passw0rd.y", "--check", "Administrator")
    assert p.returncode == 3 and p.stdout == "differs: Administrator\n"  # --check writes nothing
    assert _password(domain, "Init-Passw0rd.x", "--check", "Administrator").returncode == 0
    p = _password(domain, "Rotated-Passw0rd.y", "--apply", "Administrator")  # what the role runs
    assert p.returncode == 0 and p.stdout == "changed: Administrator\n", p.stderr
    assert _password(domain, "Rotated-Passw0rd.y", "Administrator").stdout == "unchanged: Administrator\n"
    assert _password(domain, "Init-Passw0rd.x", "--check", "Administrator").returncode == 3  # the old one is gone


def test_samba_password_errors_are_redacted(domain):
    p = _password(domain, "Ab1.x", "Administrator")  # below the domain's policy
    assert p.returncode == 1 and "password is too short" in p.stderr and "Ab1.x" not in p.stderr
    p = _password(domain, "Some-Passw0rd.z", "nosuchuser")
    assert p.returncode == 1 and "no account nosuchuser" in p.stderr and "Some-Passw0rd" not in p.stderr
    assert _password(domain, "", "Administrator").returncode == 2
