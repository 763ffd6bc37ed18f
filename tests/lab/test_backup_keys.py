"""Keys apart from storage (issue 12, item 1) on the converged session lab (nalbach + zentral).

The repository host keeps ciphertext and bcrypt hashes only; retention runs from zentral's
management host through the maintenance listener, which only that host reaches; a Kommune's
credential reaches its own repository only and cannot delete. First the checks pass (after a
retention run over nalbach's real repository); then everything is broken at once on purpose — a
repository password file placed on the backup host (the old pruning job's path, and a copy under
/root), nalbach's htpasswd entry turned apr1, the Kommunen's listener replaced by one without
--private-repos/--append-only, the retention's last run failed — and every matching check fails
with its control ids; the next converge of the backup host heals what it manages (the file in its
configuration directory, the hash, the listeners), a retention run succeeds again, and the checks
pass. Restores keep working (the restore canary runs in the final verify).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import playbook
import pytest
from playbook import by_test as _by_test
from playbook import host_address as _addr

from basisit import secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
CONF = "/etc/basisit-restic"
PLANTED = f"{CONF}/repo-passwords"  # where the old server-side pruning kept every repository password
COPY = "/root/restic-password-copy"  # outside anything the role manages: found by content
CHECKS = {
    "test_backup::test_no_repository_password_on_the_backup_host",
    "test_backup::test_htpasswd_entries_are_bcrypt",
    "test_backup::test_repository_served_append_only",
    "test_backup::test_credential_reaches_only_its_own_repository_and_cannot_delete",
    "test_backup::test_retention_ran_from_the_management_host",
}
SELECT = "repository_password or bcrypt or own_repository or append_only or retention or restore"


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the backup key checks")
    backup = _addr(lab, "zentral-backup")
    if lab.ssh(backup, f"ls /srv/restic/{KOMMUNE}/snapshots | wc -l").stdout.strip() in ("", "0"):
        for h in lab.estate.site(KOMMUNE).hosts_with_role("backup_client"):
            r = lab.ssh(str(h.address), "systemctl start basisit-backup.service", timeout=300)
            assert r.returncode == 0, f"{h.name}: first backup failed: {r.stderr}"
    state = playbook.verify_state(lab, "verify-keys")
    return lab, state


def verify(state: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--zentral", "--jobs", "2", "--", "-k", SELECT)


def _retention(lab) -> subprocess.CompletedProcess:
    mgmt = _addr(lab, "zentral-mgmt")
    return lab.ssh(mgmt, "systemctl start basisit-restic-retention.service", timeout=600)


def test_keys_apart_checks_pass_and_retention_prunes_from_the_management_host(site):
    lab, state = site
    mgmt, backup, dc = (_addr(lab, n) for n in ("zentral-mgmt", "zentral-backup", "nalbach-dc1"))
    r = _retention(lab)
    assert r.returncode == 0, r.stdout + r.stderr
    log = lab.ssh(mgmt, "journalctl -u basisit-restic-retention.service --no-pager -q -n 200 -o cat").stdout
    assert f"{KOMMUNE}: forget --prune" in log and "no errors were found" in log, log[-3000:]
    # the maintenance listener: the management host reaches it, a Kommune host does not
    assert lab.ssh(mgmt, f"nc -z -w 3 {backup} 8001").returncode == 0
    assert lab.ssh(dc, f"nc -z -w 3 {backup} 8001").returncode != 0
    assert lab.ssh(dc, f"nc -z -w 3 {backup} 8000").returncode == 0
    # nothing on the repository host can open the repository: no password file, no restic env
    assert lab.ssh(backup, f"ls {CONF}").stdout.split() == ["htpasswd", "htpasswd-maintenance"]
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    passed = _by_test(doc, "pass")
    assert CHECKS | {"test_backup::test_restore_canary"} <= set(passed), sorted(passed)


def test_keys_with_storage_fail_and_the_converge_heals(site):
    lab, state = site
    mgmt, backup = _addr(lab, "zentral-mgmt"), _addr(lab, "zentral-backup")
    password = secrets.value(lab.state / "secrets" / KOMMUNE / "restic-repository")
    rest = secrets.value(lab.state / "secrets" / KOMMUNE / "restic-rest")
    apr1 = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"], input=rest, capture_output=True, text=True, check=True
    ).stdout.strip()
    plant = (
        f"umask 077; cat > {PLANTED} && cp {PLANTED} {COPY}"
        f" && sed -i 's|^{KOMMUNE}:.*|{KOMMUNE}:{apr1}|' {CONF}/htpasswd"
        " && systemctl stop basisit-restic-server basisit-restic-maintenance"
        " && systemd-run --unit=bt-open-restic -p User=resticsrv /usr/bin/rclone serve restic --addr :8000"
        f" --htpasswd {CONF}/htpasswd /srv/restic && sleep 2"
    )
    r = lab.ssh(backup, plant, input=f"{KOMMUNE} {password}\n")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        failed_run = _retention(lab)
        p, doc = verify(state)
    finally:
        lab.ssh(backup, "systemctl stop bt-open-restic; systemctl reset-failed bt-open-restic; true")
        lab.ssh(backup, f"rm -f {COPY}")
    try:
        assert failed_run.returncode != 0, "retention ran although the maintenance listener was stopped"
        assert p.returncode == 1, p.stdout[-4000:]
        failed = _by_test(doc, "fail")
        assert set(failed) >= CHECKS, sorted(failed)
        (keys,) = failed["test_backup::test_no_repository_password_on_the_backup_host"]
        assert PLANTED in keys["message"] and COPY in keys["message"], keys["message"]
        assert {"gs:CON.3.A13", "gs:CON.3.A14"} <= set(keys["controls"])
        (weak,) = failed["test_backup::test_htpasswd_entries_are_bcrypt"]
        assert f"htpasswd: {KOMMUNE} ($apr1$" in weak["message"] and "gs:ORP.4.A23" in weak["controls"]
        (iso,) = failed["test_backup::test_credential_reaches_only_its_own_repository_and_cannot_delete"]
        assert iso["host"] == "nalbach-dc1" and "must be refused" in iso["message"], iso["message"]
        (ret,) = failed["test_backup::test_retention_ran_from_the_management_host"]
        assert "last retention run: exit-code" in ret["message"] and "gs:CON.3.A6" in ret["controls"]
        text = json.dumps(doc) + p.stdout + p.stderr
        assert password not in text and rest not in text
    finally:  # the later tests need the backup host healed, whatever failed above
        healed, _ = playbook.run(lab, "--tags", "service,maintenance", limit="zentral-backup")
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert PLANTED in healed.stdout  # the converge removed the planted file, by name
    assert lab.ssh(backup, f"ls {CONF}").stdout.split() == ["htpasswd", "htpasswd-maintenance"]
    assert lab.ssh(backup, f"grep -c '^{KOMMUNE}:\\$2b\\$' {CONF}/htpasswd").stdout.strip() == "1"
    r = _retention(lab)
    assert r.returncode == 0, r.stdout + r.stderr
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:]
    assert CHECKS | {"test_backup::test_restore_canary"} <= set(_by_test(doc, "pass"))
    assert "success" in lab.ssh(mgmt, "systemctl show -p Result --value basisit-restic-retention.service").stdout
