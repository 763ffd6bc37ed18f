"""Delegated domain joins (issue 12): members join with `basisit-join`, not the Administrator.

On the converged session lab: the join account exists, is in no privileged group, holds the join
delegation on the computer OUs only, and nalbach's endpoint's computer object lies in
OU=Arbeitsplaetze. With the account's own password (stdin of basisit-samba-tool, never argv) it
creates a computer object in OU=Server over LDAP but is refused in CN=Computers. Then the account
is put into Domain Admins on purpose: the check fails naming it (with its controls), and the next
converge of the DC (tag join_account) removes it; the checks pass again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import playbook
import pytest
from playbook import by_test as _by_test

from basisit import secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
USER = "basisit-join"
CHECKS = {
    "test_ad_dc::test_join_account_in_no_privileged_group",
    "test_ad_dc::test_join_account_delegated_on_the_computer_ous_only",
    "test_identity::test_computer_object_in_a_computer_ou",
}
SELECT = "join_account or computer_ou or domain_admins_named_only"


def verify(state: Path) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--jobs", "2", "--", "-k", SELECT)


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the join account checks")
    state = playbook.verify_state(lab, "verify-join")
    dc = next(h for h in lab.estate.site(KOMMUNE).hosts_with_role("ad_dc"))
    return lab, state, dc


def test_join_account_checks_pass_and_its_rights_end_at_the_computer_ous(site):
    lab, state, dc = site
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    passed = _by_test(doc, "pass")
    assert set(passed) >= CHECKS, sorted(passed)
    assert {r["host"] for r in passed["test_identity::test_computer_object_in_a_computer_ou"]} == {"nalbach-nal-ws-001"}
    password = secrets.value(lab.state / "secrets" / KOMMUNE / "join.secret")
    base = ",".join(f"DC={x}" for x in lab.estate.site(KOMMUNE).domain.split("."))
    create = (
        "/usr/local/sbin/basisit-samba-tool computer create {name} --computerou={ou}"
        f" -H ldap://{dc.fqdn} -U {USER} --password=@SECRET@"
    )
    ok = lab.ssh(str(dc.address), create.format(name="BTJOINPROBE1", ou="OU=Server"), input=password + "\n")
    refused = lab.ssh(str(dc.address), create.format(name="BTJOINPROBE2", ou="CN=Computers"), input=password + "\n")
    where = lab.ssh(str(dc.address), "samba-tool computer show BTJOINPROBE1 --attributes=distinguishedName").stdout
    lab.ssh(str(dc.address), "samba-tool computer delete BTJOINPROBE1; samba-tool computer delete BTJOINPROBE2; true")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"CN=BTJOINPROBE1,OU=Server,{base}" in where, where
    assert refused.returncode != 0, f"{USER} created a computer in CN=Computers: {refused.stdout}"
    assert password not in ok.stdout + ok.stderr + refused.stdout + refused.stderr


def test_join_account_in_domain_admins_fails_and_the_converge_removes_it(site):
    lab, state, dc = site
    r = lab.ssh(str(dc.address), f'samba-tool group addmembers "Domain Admins" {USER}')
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        p, doc = verify(state)
        assert p.returncode == 1, p.stdout[-4000:]
        failed = _by_test(doc, "fail")
        (priv,) = failed["test_ad_dc::test_join_account_in_no_privileged_group"]
        assert USER in priv["message"] and "Domain Admins" in priv["message"], priv["message"]
        assert {"gs:APP.2.2.A7", "gs:ORP.4.A2"} <= set(priv["controls"])
        assert "test_ad_dc::test_domain_admins_named_only" in failed
    finally:  # the later tests need the DC healed, whatever failed above
        healed, _ = playbook.run(lab, "--tags", "join_account", limit=dc.name)
    assert healed.returncode == 0, healed.stdout[-4000:]
    assert "Domain Admins" in healed.stdout  # the converge removed it, by the group's name
    assert playbook.recap(healed.stdout)[dc.name]["changed"] >= 1
    members = lab.ssh(str(dc.address), 'samba-tool group listmembers "Domain Admins"').stdout.split("\n")
    assert USER not in members, members
    again, _ = playbook.run(lab, "--tags", "join_account", limit=dc.name)
    assert playbook.recap(again.stdout)[dc.name]["changed"] == 0, again.stdout[-3000:]
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:]
    assert set(_by_test(doc, "pass")) >= CHECKS
