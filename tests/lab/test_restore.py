"""Disaster recovery (issue 15): a lost domain controller rebuilt from zentral's backup.

On the converged session lab: nalbach-dc1 is backed up through the normal job; the new check that
its newest snapshot holds a restorable domain backup passes, is seen failing when the newest
snapshot lacks it (a snapshot of /etc/hostname only, taken with the DC's own credential) and
passes after the next backup. Then the DC is lost — `basisit lab destroy` stops its machine and
throws its disk away — a fresh host is booted at its name (`lab up`), a plain converge of nalbach
is refused before anything is applied (the provisioning guard: it would make a new domain), and
`basisit restore --kommune nalbach --host dc1` (its recreate step finds the fresh host) restores
the domain from the newest snapshot under the DC's own name, converges the Kommune
(playbooks/restore-dc.yml) and runs `basisit verify --kommune nalbach`, which passes (the probe
user's Kerberos login and SMB from the endpoint included). The domain SID, the users and the groups are the ones
from before; the endpoint keeps its trust (its machine keytab authenticates against the restored
DC; it was not joined again). The RTO (destroy to verified, the refused converge not counted) is
recorded to $BASISIT_RESTORE_RESULTS when set (bench/restore.py). Runs after the other modules
but before test_retire (conftest's FINAL_MODULES) and leaves nalbach converged and verified.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import playbook
import pytest
from playbook import by_test
from playbook import host_address as _addr

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
DC = "nalbach-dc1"
ENDPOINT = "nalbach-nal-ws-001"
CHECK = "test_backup::test_newest_snapshot_holds_a_restorable_domain_backup"
KINIT = "test_identity::test_domain_user_kinit_and_smb_from_endpoint"
RESTIC = "set -a; . /etc/basisit-backup/restic.env; set +a; restic"


def _sh(lab, host: str, command: str, timeout: float = 120) -> str:
    r = lab.ssh(_addr(lab, host), command, timeout=timeout)
    assert r.returncode == 0, f"{host}: {command!r} exited {r.returncode}: {r.stdout[-500:]} {r.stderr[-1000:]}"
    return r.stdout


def _domain(lab, host: str = DC) -> dict:
    """What must survive the restore: the domain SID (from the Administrator's SID), users, groups."""
    sid = _sh(lab, host, "samba-tool user show Administrator --attributes=objectSid")
    m = re.search(r"^objectSid: (S-1-5-21-[\d-]+)-500$", sid, re.M)
    assert m, f"no Administrator SID in: {sid}"
    users = sorted(_sh(lab, host, "samba-tool user list").split())
    groups = sorted(_sh(lab, host, "samba-tool group list").splitlines())
    return {"sid": m[1], "users": users, "groups": groups}


def _machine_keytab_authenticates(lab) -> tuple[bool, str]:
    """The endpoint's machine account authenticates with its keytab against the domain's KDC."""
    r = lab.ssh(
        _addr(lab, ENDPOINT),
        "p=$(klist -k /etc/krb5.keytab | awk '/\\$@/ {print $2; exit}') && echo \"$p\" && "
        'KRB5CCNAME=MEMORY: kinit -k -t /etc/krb5.keytab "$p" && echo KINIT-OK',
        timeout=60,
    )
    return r.returncode == 0 and "KINIT-OK" in r.stdout, (r.stdout + r.stderr)[-600:]


def _backup(lab) -> None:
    _sh(lab, DC, "systemctl start basisit-backup.service", timeout=600)


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge before the restore")
    _backup(lab)
    return lab


def test_restorable_domain_backup_check_passes_fails_and_heals(site):
    lab = site
    state = playbook.verify_state(lab, "verify-restore")
    p, doc = playbook.verify(state, "--jobs", "2", "--", "-k", "restorable_domain_backup")
    assert p.returncode == 0 and CHECK in by_test(doc, "pass"), f"{p.stdout[-2000:]}\n{p.stderr[-1000:]}"

    # a newest snapshot without the domain backup (the DC's own credential, its --host)
    _sh(lab, DC, f"{RESTIC} backup --host {DC} --tag basisit /etc/hostname >/dev/null", timeout=300)
    p, doc = playbook.verify(state, "--jobs", "2", "--", "-k", "restorable_domain_backup")
    failed = by_test(doc, "fail").get(CHECK)
    assert p.returncode == 1 and failed, f"the check did not fail:\n{p.stdout[-2000:]}"
    assert "gs:APP.2.2.A12" in failed[0]["controls"], failed[0]
    assert "holds no Samba domain backup" in failed[0]["message"], failed[0]

    _backup(lab)  # the next run of the job heals it
    p, doc = playbook.verify(state, "--jobs", "2", "--", "-k", "restorable_domain_backup")
    assert p.returncode == 0 and CHECK in by_test(doc, "pass"), f"{p.stdout[-2000:]}\n{p.stderr[-1000:]}"


def test_lost_dc_restored_from_backup_passes_verify(site):
    lab = site
    before = _domain(lab)
    ok, detail = _machine_keytab_authenticates(lab)
    assert ok, f"the endpoint's machine keytab does not authenticate before the restore: {detail}"
    keytab_before = _sh(lab, ENDPOINT, "sha256sum /etc/krb5.keytab").split()[0]

    # a restore refuses a host that holds a domain database (it never replaces a live DC)
    p = lab.cli("restore", "--kommune", KOMMUNE, "--host", "dc1", "--host-ready", "--no-verify", check=False)
    said = " ".join((p.stdout + p.stderr + _restore_log(lab)).split())
    assert p.returncode == 1 and "never replaces a live one" in said, f"{p.stdout[-2000:]}\n{p.stderr[-1000:]}"

    # the DC is lost: its machine stopped, its disk thrown away
    lab.cli("lab", "destroy", "--kommune", KOMMUNE, "--host", "dc1")
    gone = time.monotonic()
    assert lab.ssh(_addr(lab, DC), "true", timeout=15).returncode != 0, "the DC still answers after destroy"

    # a fresh host at the DC's name (what restore's recreate step does), then a plain converge of
    # the Kommune: refused before anything is applied (it would provision a new domain)
    lab.cli("lab", "up", "--kommune", KOMMUNE)
    t0 = time.monotonic()
    p = _converge_fresh(lab, KOMMUNE)
    refused_seconds = time.monotonic() - t0
    said = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0, f"a converge of the fresh DC host was not refused:\n{p.stdout[-3000:]}"
    assert f"basisit restore --kommune {KOMMUNE} --host dc1" in said and "NEW domain" in said, p.stdout[-3000:]
    assert before["sid"] in said, f"the refusal does not name the recorded domain {before['sid']}: {p.stdout[-2000:]}"
    r = playbook.recap(p.stdout)
    assert r.get(DC, {}).get("failed") == 1 and all(v["changed"] == 0 for v in r.values()), r
    clean = _sh(
        lab, DC, "for f in /var/lib/samba/private/sam.ldb /etc/basisit-backup; do test -e $f && echo $f; done; true"
    )
    assert not clean.split(), f"the refused converge provisioned or configured the fresh DC host: {clean}"

    p = lab.cli("restore", "--kommune", KOMMUNE, "--host", "dc1", "--json", check=False, timeout=5400)
    # destroyed to verified, without the refused converge the test added
    rto = time.monotonic() - gone - refused_seconds
    doc = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    if os.environ.get("BASISIT_RESTORE_RESULTS") and doc:
        import sys

        sys.path.insert(0, str(ROOT / "bench"))
        import restore as bench_restore

        bench_restore.record(
            bench_restore.result_doc(
                doc, rto, "tests/lab/test_restore.py on the session lab (nalbach + bous + zentral)"
            ),
            Path(os.environ["BASISIT_RESTORE_RESULTS"]),
        )
    assert p.returncode == 0 and doc.get("result") == "ok", f"restore failed:\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}"
    assert [s["name"] for s in doc["steps"]] == ["recreate", "restore", "verify"], doc

    # verify passed (its step is exit 0): the probe user's Kerberos login and SMB from the endpoint ran and passed
    runs = sorted((lab.state / "reports" / "runs").iterdir())
    results = json.loads((runs[-1] / "results.json").read_text(encoding="utf-8"))
    assert KINIT in by_test(results, "pass"), f"{KINIT} did not pass in the restore's verify"
    assert CHECK in by_test(results, "pass"), f"{CHECK} did not pass in the restore's verify"

    after = _domain(lab)
    assert after["sid"] == before["sid"], f"domain SID changed: {before['sid']} -> {after['sid']}"
    assert after["users"] == before["users"], f"users differ: {before['users']} -> {after['users']}"
    assert after["groups"] == before["groups"], f"groups differ: {before['groups']} -> {after['groups']}"
    # members keep their trust: the same machine keytab (no re-join) authenticates against the restored DC
    assert _sh(lab, ENDPOINT, "sha256sum /etc/krb5.keytab").split()[0] == keytab_before, "the endpoint was re-joined"
    ok, detail = _machine_keytab_authenticates(lab)
    assert ok, f"the endpoint's machine keytab does not authenticate against the restored DC: {detail}"
    # one DC in the domain, under its own name
    servers = _sh(lab, DC, "samba-tool computer list")
    assert "DC1$" in servers.split(), servers
    assert not [s for s in servers.split() if s.startswith("RESTORE")], f"staging DC left behind: {servers}"


def _converge_fresh(lab, limit: str):
    """site.yml -l LIMIT with a fresh ssh control directory (no master connection to the lost host)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="basisit-rst-cp-") as cp:
        env = dict(lab.env, BASISIT_STATE=str(lab.state), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = cp
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/site.yml", "-l", limit]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _restore_log(lab) -> str:
    """The newest restore run's restore-step log (the refusal's message is there)."""
    d = lab.state / "reports" / "restore"
    runs = sorted(d.iterdir()) if d.exists() else []
    log = runs[-1] / "restore.log" if runs else None
    return log.read_text(encoding="utf-8", errors="replace") if log and log.exists() else ""
