"""Named people only, and converge heals what it owns (issue 12 items 4/5, issue 15), on the
converged session lab (nalbach + zentral).

Nobody logs in as root: the lab, Ansible and verify reach every host as the automation account
(sudo for root's work), and a root login with the same key is refused on every host. Then a host
is broken on purpose: an sshd drop-in sorting before base's (`00-evil.conf`, PermitRootLogin yes)
and a hand-made `/etc/sudoers.d/evil`. Verify names both as failures with their control ids; a
converge of that host's sshd and sudo removes both (reported as changes), and verify passes again.
"""

from __future__ import annotations

from pathlib import Path

import playbook
import pytest
from playbook import failing, host_address, verify

from basisit.lab import ssh
from basisit.model import AUTOMATION_USER

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"

EVIL_DROPIN = "/etc/ssh/sshd_config.d/00-evil.conf"
EVIL_SUDOERS = "/etc/sudoers.d/evil"
ADMINS_NOPASSWD = "/etc/sudoers.d/50-admins-nopasswd"


@pytest.fixture(scope="module")
def site(converged):
    """nalbach + zentral converged; a verify state dir of this module with the lab's facts and secrets."""
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the access tests")
    state = playbook.verify_state(lab, "verify-access")
    return lab, state


def test_every_host_refuses_root_and_admits_the_automation_account(site):
    lab, _ = site
    for name in sorted(playbook.EXPECTED_HOSTS):
        addr = host_address(lab, name)
        r = ssh.run(lab.state, addr, "true", user="root", root=False)
        assert r.returncode == 255 and "Permission denied" in r.stderr, f"{name}: root login: {r.returncode} {r.stderr}"
        me = lab.ssh(addr, 'printf \'%s %s\' "$SUDO_USER" "$(id -un)"')
        assert me.returncode == 0 and me.stdout == f"{AUTOMATION_USER} root", f"{name}: {me.stdout} {me.stderr}"


def test_evil_sshd_dropin_and_sudoers_file_fail_then_converge_removes_them(site):
    lab, state = site
    dc = host_address(lab, f"{KOMMUNE}-dc1")
    plant = (
        f"printf 'PermitRootLogin yes\\n' > {EVIL_DROPIN}"
        f" && printf 'nobody ALL=(ALL) NOPASSWD: ALL\\n' > {EVIL_SUDOERS} && chmod 0440 {EVIL_SUDOERS}"
        " && systemctl reload ssh && sshd -T | grep -i '^permitrootlogin'"
    )
    r = lab.ssh(dc, plant)
    assert r.returncode == 0 and r.stdout.split() == ["permitrootlogin", "yes"], r.stdout + r.stderr
    try:
        # Defence in depth: root is still refused (not in AllowGroups), but the checks fail.
        assert ssh.run(lab.state, dc, "true", user="root", root=False).returncode == 255
        p, doc = verify(state, "--jobs", "2", "--", "-k", "sshd or sudo or root_login")
        assert p.returncode == 1, p.stdout[-3000:]
        fails = [r for r in failing(doc) if r["host"] == f"{KOMMUNE}-dc1"]
        by_id = {r["test_id"]: r for r in fails}
        assert {
            "test_base::test_sshd_option",
            "test_base::test_sshd_config_d_only_managed",
            "test_base::test_sudo_only_through_the_admin_group",
            "test_base::test_sudo_only_named_admins",
        } <= set(by_id), sorted(by_id)
        root = [r for r in fails if r["test_id"] == "test_base::test_sshd_option"]
        assert [r["nodeid"] for r in root if "permitrootlogin" in r["nodeid"]] == [r["nodeid"] for r in root], root
        assert {"cis-deb12:5.1.20", "devsec:sshd-06"} <= set(root[0]["controls"])
        assert "00-evil.conf" in by_id["test_base::test_sshd_config_d_only_managed"]["message"]
        assert "'evil'" in by_id["test_base::test_sudo_only_through_the_admin_group"]["message"]
        assert "nobody" in by_id["test_base::test_sudo_only_named_admins"]["message"]
        nopasswd = by_id["test_base::test_sudo_nopasswd_only_for_the_automation_account"]["message"]
        assert f"{EVIL_SUDOERS}: nobody ALL=(ALL) NOPASSWD: ALL" in nopasswd, nopasswd
        assert all(r["host"] == f"{KOMMUNE}-dc1" for r in failing(doc)), [r["nodeid"] for r in failing(doc)]
        healed, _ = playbook.run(lab, "--tags", "sshd,sudo", limit=f"{KOMMUNE}-dc1")
        assert healed.returncode == 0, healed.stdout[-4000:]
    finally:
        lab.ssh(dc, f"rm -f {EVIL_DROPIN} {EVIL_SUDOERS}; systemctl reload ssh; true")
    # the converge removed both, reported as changes, and reloaded sshd
    assert f"item={EVIL_DROPIN}" in healed.stdout and f"item={EVIL_SUDOERS}" in healed.stdout, healed.stdout[-4000:]
    assert playbook.recap(healed.stdout)[f"{KOMMUNE}-dc1"]["changed"] >= 2
    p, doc = verify(state, "--jobs", "2", "--", "-k", "sshd or sudo or root_login")
    assert p.returncode == 0 and not failing(doc), [r["nodeid"] for r in failing(doc)]


def test_admins_sudo_without_password_and_a_locked_admin_password_fail_then_converge_heals(site):
    lab, state = site
    dc = host_address(lab, f"{KOMMUNE}-dc1")
    admin = lab.estate.standard.admins[0].name
    plant = (
        f"printf '%%basisit-admins ALL=(ALL) NOPASSWD: ALL\\n' > {ADMINS_NOPASSWD} && chmod 0440 {ADMINS_NOPASSWD}"
        f" && visudo -c -q && usermod -L {admin} && getent shadow {admin} | cut -d: -f2 | cut -c1-4"
    )
    r = lab.ssh(dc, plant)
    assert r.returncode == 0 and r.stdout.strip() == "!$6$", r.stdout + r.stderr
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "sudo or admin_passwords")
        assert p.returncode == 1, p.stdout[-3000:]
        by_id = {r["test_id"]: r for r in failing(doc) if r["host"] == f"{KOMMUNE}-dc1"}
        assert {
            "test_base::test_sudo_nopasswd_only_for_the_automation_account",
            "test_base::test_admins_sudo_asks_for_the_password",
            "test_base::test_admin_passwords_are_the_vaulted_ones",
        } <= set(by_id), sorted(by_id)
        files = by_id["test_base::test_sudo_nopasswd_only_for_the_automation_account"]["message"]
        assert f"{ADMINS_NOPASSWD}: %basisit-admins ALL=(ALL) NOPASSWD: ALL" in files, files
        asks = by_id["test_base::test_admins_sudo_asks_for_the_password"]["message"]
        assert f"{admin}: sudo -l -U {admin}:" in asks and "NOPASSWD: ALL" in asks, asks
        locked = by_id["test_base::test_admin_passwords_are_the_vaulted_ones"]["message"]
        assert f"{admin}: password locked (!)" in locked, locked
        assert all("cis-deb12:5.2.4" in r["controls"] for r in by_id.values() if "sudo_only" not in r["test_id"])
        assert all(r["host"] == f"{KOMMUNE}-dc1" for r in failing(doc)), [r["nodeid"] for r in failing(doc)]
        healed, _ = playbook.run(lab, "--tags", "admins,sudo", limit=f"{KOMMUNE}-dc1")
        assert healed.returncode == 0, healed.stdout[-4000:]
    finally:
        lab.ssh(dc, f"rm -f {ADMINS_NOPASSWD}; usermod -U {admin}; true")
    # the converge removed the file and unlocked the password (the vaulted hash again), as changes
    assert f"item={ADMINS_NOPASSWD}" in healed.stdout, healed.stdout[-4000:]
    assert f"changed: [{KOMMUNE}-dc1] => (item={admin})" in healed.stdout, healed.stdout[-4000:]
    assert playbook.recap(healed.stdout)[f"{KOMMUNE}-dc1"]["changed"] >= 2
    p, doc = verify(state, "--jobs", "2", "--", "-k", "sudo or admin_passwords")
    assert p.returncode == 0 and not failing(doc), [r["nodeid"] for r in failing(doc)]
