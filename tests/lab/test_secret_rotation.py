"""Secret rotation (issue 12): `basisit secrets rotate` of restic, probe and ad-admin, applied by the
next converge, on the converged session lab (nalbach + zentral).

First the rotation checks pass. Then nalbach's restic (repository password and REST credential),
probe and ad-admin secrets are rotated on the control host: until the converge, verify's checks
fail naming them (seen failing: the probe's kinit, the Administrator's password on the DC, the
repository's key), and the old repository password is kept as restic-repository.previous; a
second rotation of restic is refused meanwhile. The converge of nalbach + zentral applies them: the
DC resets both passwords (their NT hash differed from the secret), zentral's management host adds
the repository key of the new password with the old one and, once nalbach's client has the new
one, removes the old key; the .previous file is gone. Then verify's identity, join and backup
checks pass with the new values, retention runs with them, the restore drill (a backup through the
normal job, restored and compared) passes, and the old values no longer work: kinit with the old
probe password fails, the old Administrator password is not the DC's, the old repository password
opens nothing and the old REST credential is refused. A converge of the rotation's tasks again
changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import playbook
import pytest
from playbook import by_test as _by_test
from playbook import host_address as _addr

from basisit import secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
KINDS = ("restic", "probe", "ad-admin")
FILES = ("restic-repository", "restic-rest", "probe.secret", "ad-administrator")
PROBE = "basisit-probe"
ROTATION_CHECKS = {
    "test_identity::test_domain_user_kinit_and_smb_from_endpoint",
    "test_ad_dc::test_administrator_password_is_the_control_hosts_secret",
    "test_backup::test_repository_opens_with_the_control_hosts_password_only",
}
AFTER_CHECKS = ROTATION_CHECKS | {
    "test_backup::test_newest_snapshot_within_rpo",
    "test_backup::test_restore_canary",
    "test_backup::test_credential_reaches_only_its_own_repository_and_cannot_delete",
    "test_backup::test_retention_ran_from_the_management_host",
    "test_identity::test_computer_object_in_a_computer_ou",
    "test_ad_dc::test_join_account_in_no_privileged_group",
}
SELECT = (
    "kinit or administrator_password or repository_opens or newest_snapshot or restore_canary"
    " or own_repository or retention_ran or computer_ou or join_account_in_no"
)
RESTIC_ENV = "set -a; . /etc/basisit-backup/restic.env; set +a"
RESTIC = f"{RESTIC_ENV}; unset RESTIC_PASSWORD_FILE; restic"
# The REST listener answers a credential from stdin (never an argument): the HTTP status of the
# repository's config, with the URL of the client's restic.env stripped of its userinfo.
REST_STATUS = r"""python3 - 3<&0 <<'EOF'
import base64, os, re, urllib.error, urllib.request
cred = os.fdopen(3).readline().strip()
env = open("/etc/basisit-backup/restic.env").read()
url = re.sub(r"//[^@/]*@", "//", re.search(r"RESTIC_REPOSITORY=rest:(\S+)", env).group(1))
req = urllib.request.Request(url + "config", headers={"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()})
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
EOF"""


def verify(state: Path) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--zentral", "--jobs", "2", "--", "-k", SELECT)


def _restore_drill(lab) -> subprocess.CompletedProcess:
    env = dict(lab.env, BASISIT_STATE=str(lab.state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_CONTROL_PATH_DIR"] = str(lab.state / "ansible-cp")
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run([exe, "playbooks/restore-drill.yml", "-l", KOMMUNE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the rotation")
    s = lab.estate.site(KOMMUNE)
    dc = s.hosts_with_role("ad_dc")[0]
    ws = next(h for h in s.hosts if h.name == "nalbach-nal-ws-001")
    clients = [str(h.address) for h in s.hosts_with_role("backup_client")]
    for h in s.hosts_with_role("backup_client"):  # verify's backup checks need a snapshot of each client
        snaps = lab.ssh(
            str(h.address), f"{RESTIC_ENV}; restic snapshots --json --latest 1 --host {h.name}", timeout=120
        )
        if snaps.stdout.strip() in ("", "[]", "null"):
            r = lab.ssh(str(h.address), "systemctl start basisit-backup.service", timeout=300)
            assert r.returncode == 0, f"{h.name}: first backup failed: {r.stderr}"
    return lab, dc, ws, clients, f"{s.domain.upper()}"


def _kinit(lab, ws, realm: str, password: str) -> subprocess.CompletedProcess:
    command = (
        'export KRB5CCNAME="FILE:$(mktemp)"; trap \'kdestroy -q 2>/dev/null; rm -f "${KRB5CCNAME#FILE:}"\' EXIT; '
        f"timeout 20 kinit {PROBE}@{realm} >/dev/null && klist | grep -q krbtgt/{realm}@{realm} && echo kinit-ok"
    )
    return lab.ssh(str(ws.address), command, input=password + "\n", timeout=60)


def _repo_opens(lab, client: str, password: str) -> subprocess.CompletedProcess:
    return lab.ssh(client, f"{RESTIC} cat config --password-file /dev/stdin", input=password + "\n", timeout=120)


def _admin_check(lab, dc, password: str) -> subprocess.CompletedProcess:
    return lab.ssh(
        str(dc.address), "/usr/local/sbin/basisit-samba-password --check Administrator", input=password + "\n"
    )


def test_rotation_is_applied_by_the_next_converge_and_the_old_values_stop_working(site):
    lab, dc, ws, clients, realm = site
    d = lab.state / "secrets" / KOMMUNE
    p, doc = verify(playbook.verify_state(lab, "verify-rotation-before"))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert set(_by_test(doc, "pass")) >= AFTER_CHECKS, sorted(_by_test(doc, "pass"))
    old = {n: secrets.value(d / n) for n in FILES}
    join_before = secrets.value(d / "join.secret")

    # rotate: new values on the control host only; the old repository password is kept
    for kind in KINDS:
        r = lab.cli("secrets", "rotate", "--kommune", KOMMUNE, "--what", kind)
        assert "next converge" in r.stdout and not any(v in r.stdout + r.stderr for v in old.values())
    new = {n: secrets.value(d / n) for n in FILES}
    assert all(new[n] != old[n] for n in FILES)
    assert secrets.value(d / "restic-repository.previous") == old["restic-repository"]
    again = lab.cli("secrets", "rotate", "--kommune", KOMMUNE, "--what", "restic", check=False)
    assert again.returncode == 2 and "not applied yet" in again.stderr, again.stderr
    assert secrets.value(d / "restic-repository") == new["restic-repository"]  # the refusal changed nothing

    # seen failing: the site still has the old values
    p, doc = verify(playbook.verify_state(lab, "verify-rotation-pending"))
    assert p.returncode == 1, p.stdout[-4000:]
    failed = _by_test(doc, "fail")
    assert set(failed) >= ROTATION_CHECKS, sorted(failed)
    (admin,) = failed["test_ad_dc::test_administrator_password_is_the_control_hosts_secret"]
    assert "not the control host's secret" in admin["message"] and "gs:ORP.4.A23" in admin["controls"]
    (key,) = failed["test_backup::test_repository_opens_with_the_control_hosts_password_only"]
    assert "does not open the repository" in key["message"], key["message"]
    assert not any(v in p.stdout + p.stderr for v in new.values())

    # the converge of nalbach + zentral applies them
    first, seconds = playbook.run(lab)
    r = playbook.assert_recap(first, f"converge after the rotation ({seconds:.0f} s)")
    assert r[dc.name]["changed"] >= 1 and r["zentral-mgmt"]["changed"] >= 1
    assert not any(v in first.stdout + first.stderr for v in list(new.values()) + list(old.values()))
    assert not (d / "restic-repository.previous").exists(), "the converge did not finish the restic switch"
    assert secrets.pending(lab.state / "secrets", KOMMUNE) == []
    assert secrets.value(d / "join.secret") == join_before  # members' join account untouched

    # the old values no longer work, the new ones do
    assert "kinit-ok" in _kinit(lab, ws, realm, new["probe.secret"]).stdout
    stale = _kinit(lab, ws, realm, old["probe.secret"])
    assert stale.returncode != 0 and "kinit-ok" not in stale.stdout, stale.stdout + stale.stderr
    assert _admin_check(lab, dc, new["ad-administrator"]).returncode == 0
    assert _admin_check(lab, dc, old["ad-administrator"]).returncode == 3
    for client in clients:
        assert _repo_opens(lab, client, new["restic-repository"]).returncode == 0
        stale = _repo_opens(lab, client, old["restic-repository"])
        assert stale.returncode != 0 and "wrong password" in stale.stdout + stale.stderr, stale.stderr
        assert lab.ssh(client, REST_STATUS, input=f"{KOMMUNE}:{new['restic-rest']}\n").stdout.strip() == "200"
        assert lab.ssh(client, REST_STATUS, input=f"{KOMMUNE}:{old['restic-rest']}\n").stdout.strip() == "401"

    # retention (zentral's own credential and the new repository password) and a restore drill
    mgmt = _addr(lab, "zentral-mgmt")
    ret = lab.ssh(mgmt, "systemctl start basisit-restic-retention.service", timeout=600)
    assert ret.returncode == 0, ret.stdout + ret.stderr
    drill = _restore_drill(lab)
    assert drill.returncode == 0 and "restore drill passed" in drill.stdout, drill.stdout[-4000:] + drill.stderr[-2000:]

    p, doc = verify(playbook.verify_state(lab, "verify-rotation-after"))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert set(_by_test(doc, "pass")) >= AFTER_CHECKS, sorted(_by_test(doc, "pass"))

    # idempotent: the rotation's tasks (the DC's passwords, the rekey steps, retention) change nothing now
    again, _ = playbook.run(lab, "--tags", "provision,probe,job", limit=f"{dc.name},zentral-mgmt")
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    rc = playbook.recap(again.stdout)
    assert rc[dc.name]["changed"] == 0 and rc["zentral-mgmt"]["changed"] == 0, again.stdout[-4000:]
