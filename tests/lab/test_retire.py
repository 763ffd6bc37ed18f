"""Retire cleanly (issue 15): an endpoint removed from the inventory, then a whole Kommune retired.

On the session's converged lab (nalbach, bous, zentral; bous converged by test_rollout):

1. nalbach's realised endpoint nal-ws-001 is removed from a copy of the inventory (and from the
   lab's site facts, as a cloud realisation's next facts import would drop it). Before the
   converge, verify against that copy fails the two checks that compare the site with the model
   (`test_no_computer_or_dns_record_the_model_does_not_list` names the computer account and its
   records, `test_dhcp_reservations_match_assets` the reservation); `site.yml -l nalbach` with the
   copy removes the computer account, its A and PTR records and its DHCP reservation; a second run
   of those features changes nothing; verify passes.
2. bous is marked `status: retired` in that copy and `basisit retire --kommune bous` runs: its lab
   hosts are down, zentral has no WireGuard peer, REST credential or log sender of bous left, its
   repository is still there and read-only, the ledger and history say so, and nalbach (with
   zentral) still verifies.

bous is gone afterwards: conftest runs this module last, right before test_lab's teardown check.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import playbook
import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE, ENDPOINT, RETIRED = "nalbach", "nal-ws-001", "bous"
SELECT = "test_no_computer_or_dns_record or test_dhcp_reservations_match_assets"


def _copy_inventory(dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "inventory", dest, ignore=shutil.ignore_patterns(".*"))
    return dest


def _without_endpoint(inv: Path) -> None:
    path = inv / "kommunen" / f"{KOMMUNE}.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for ln in lines if f"hostname: {ENDPOINT}," not in ln]
    assert len(kept) == len(lines) - 1, f"{path}: expected one endpoint line of {ENDPOINT}"
    path.write_text("".join(kept), encoding="utf-8")


def _dc(lab) -> str:
    return playbook.host_address(lab, f"{KOMMUNE}-dc1")


def _gw(lab) -> str:
    return playbook.host_address(lab, f"{KOMMUNE}-gw")


def _endpoint(lab):
    return next(h for h in lab.estate.kommunen[KOMMUNE].hosts if h.short == ENDPOINT)


def _directory(lab) -> dict[str, str]:
    """What nalbach's DC and gateway hold of the endpoint: computer account, A, PTR, reservation."""
    ep = _endpoint(lab)
    dc = _dc(lab)
    computer = lab.ssh(dc, f"sudo -n samba-tool computer show {ENDPOINT.upper()} --attributes=distinguishedName")
    a = lab.ssh(dc, f"host -t A {ep.fqdn} 127.0.0.1")
    ptr = lab.ssh(dc, f"host {ep.address} 127.0.0.1")
    kea = lab.ssh(_gw(lab), "sudo -n cat /etc/kea/kea-dhcp4.conf")
    assert kea.returncode == 0, kea.stderr
    reserved = {r["ip-address"] for s in json.loads(kea.stdout)["Dhcp4"]["subnet4"] for r in s.get("reservations", [])}
    return {
        "computer": computer.stdout if computer.returncode == 0 else "",
        "a": a.stdout if str(ep.address) in a.stdout else "",
        "ptr": ptr.stdout if ep.fqdn in ptr.stdout else "",
        "reservation": str(ep.address) if str(ep.address) in reserved else "",
    }


def _converge(lab, inv: Path, *extra: str) -> subprocess.CompletedProcess:
    p, _ = playbook.run(lab, "-i", str(inv / "basisit.yml"), *extra, limit=KOMMUNE)
    r = playbook.recap(p.stdout)
    tail = p.stdout[-6000:] + p.stderr[-2000:]
    assert set(r) == {f"{KOMMUNE}-gw", f"{KOMMUNE}-dc1"}, f"recap hosts {sorted(r)}:\n{tail}"
    assert p.returncode == 0 and not any(v["failed"] or v["unreachable"] for v in r.values()), tail
    return p


@pytest.fixture(scope="module")
def removed(converged):
    """The inventory copy without the endpoint, and what the lab held of it before."""
    lab = converged[0]
    before = _directory(lab)
    inv = _copy_inventory(lab.state / "retire-inventory")
    _without_endpoint(inv)
    # The realisation drops it too, as `pulumi up` and `basisit facts import` would in the cloud:
    # the inventory refuses facts that list a host the model does not (sitefacts.check_against_model).
    # Its container keeps running (a decommissioned PC still on the wire); `lab down --all` removes it.
    facts = lab.state / "facts" / f"{KOMMUNE}.json"
    doc = json.loads(facts.read_text(encoding="utf-8"))
    assert doc["hosts"].pop(f"{KOMMUNE}-{ENDPOINT}", None) is not None, sorted(doc["hosts"])
    facts.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return lab, inv, before


def test_the_endpoint_was_in_dhcp_dns_and_ad(removed):
    """The probes see the endpoint while the model lists it (so their "gone" below means something)."""
    _, _, before = removed
    assert all(before.values()), f"before removal, not everything of {ENDPOINT} was found: {before}"


def test_checks_fail_while_the_site_holds_what_the_model_no_longer_lists(removed):
    lab, inv, _ = removed
    state = playbook.verify_state(lab, "retire-before")
    p, doc = playbook.verify(state, "--jobs", "2", "--", "-k", SELECT, inventory=inv)
    failed = playbook.by_test(doc, "fail")
    ad = failed.get("test_ad_dc::test_no_computer_or_dns_record_the_model_does_not_list", [])
    dhcp = failed.get("test_gateway::test_dhcp_reservations_match_assets", [])
    assert p.returncode == 1 and ad and dhcp, f"rc {p.returncode}; failing {sorted(failed)}:\n{p.stdout[-3000:]}"
    assert ENDPOINT in ad[0]["message"] and str(_endpoint(lab).address) in dhcp[0]["message"], (ad, dhcp)
    assert set(ad[0]["controls"]) >= {"gs:ORP.4.A1", "gs:APP.2.2.A6"}, ad[0]["controls"]


def test_converge_removes_it_from_dhcp_dns_and_ad(removed):
    lab, inv, _ = removed
    _converge(lab, inv)
    after = _directory(lab)
    assert not any(after.values()), f"after the converge {ENDPOINT} is still there: {after}"


def test_second_run_changes_nothing(removed):
    lab, inv, _ = removed
    p = _converge(lab, inv, "--tags", "prune,dhcp")
    changed = {h: v["changed"] for h, v in playbook.recap(p.stdout).items() if v["changed"]}
    assert not changed, f"second run changed {changed}:\n{p.stdout[-4000:]}"


def test_checks_pass_after_the_converge(removed):
    lab, inv, _ = removed
    state = playbook.verify_state(lab, "retire-after")
    p, doc = playbook.verify(state, "--jobs", "2", "--", "-k", SELECT, inventory=inv)
    passed = playbook.by_test(doc, "pass")
    assert p.returncode == 0 and not playbook.failing(doc), p.stdout[-3000:]
    assert "test_ad_dc::test_no_computer_or_dns_record_the_model_does_not_list" in passed, sorted(passed)


# --- a whole Kommune retired -----------------------------------------------------------------


def _zentral(lab, host: str, command: str) -> str:
    p = lab.ssh(playbook.host_address(lab, f"zentral-{host}"), command)
    assert p.returncode == 0, f"zentral-{host}: {command}: {p.stderr.strip()[-500:]}"
    return p.stdout


def _zentral_view(lab) -> dict[str, bool]:
    """Whether zentral still knows bous: WireGuard peer, REST credential, log sender, repository."""
    site = lab.estate.kommunen[RETIRED]
    addresses = [str(a) for h in site.hosts for a in h.addresses.values()] + [str(site.vpn_address)]
    hub = next(h.short for h in lab.estate.zentral.hosts if "vpn_hub" in h.roles)
    peers = _zentral(lab, hub, "sudo -n wg show all allowed-ips")
    senders = _zentral(lab, "log", "sudo -n cat /etc/rsyslog.d/basisit-senders.json")
    users = _zentral(lab, "backup", "sudo -n cut -d: -f1 /etc/basisit-restic/htpasswd")
    repo = lab.ssh(playbook.host_address(lab, "zentral-backup"), f"sudo -n test -d /srv/restic/{RETIRED}")
    return {
        "peer": f"{site.vpn_address}/32" in peers or str(site.block) in peers,
        "credential": RETIRED in users.split(),
        "log sender": any(f'"{a}"' in senders for a in addresses),
        "repository": repo.returncode == 0,
    }


@pytest.fixture(scope="module")
def retired(removed):
    lab, inv, _ = removed
    before = _zentral_view(lab)
    path = inv / "kommunen" / f"{RETIRED}.yaml"
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\nstatus: retired\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "basisit.cli", "--inventory", str(inv), "--state", str(lab.state)]
    p = subprocess.run(
        [*cmd, "retire", "--kommune", RETIRED, "--backend", "lab"],
        capture_output=True,
        text=True,
        env=lab.env,
        cwd=ROOT,
        timeout=2400,
    )
    return lab, inv, before, p


def test_retire_takes_the_kommune_down_and_zentral_forgets_it(retired):
    lab, _, before, p = retired
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert before["peer"] and before["credential"] and before["log sender"], f"zentral before retire: {before}"
    after = _zentral_view(lab)
    assert not after["peer"] and not after["credential"] and not after["log sender"], f"after retire: {after}"
    assert after["repository"] == before["repository"], f"the repository must be kept: {before} -> {after}"
    status = lab.cli("lab", "status").stdout
    assert not [ln for ln in status.splitlines() if ln.startswith(f"{RETIRED} ")], status


def test_its_repository_is_kept_read_only(retired):
    lab, _, before, _ = retired
    if not before["repository"]:
        pytest.skip(f"{RETIRED} never took a backup in this session (test_rollout did not run)")
    backup = playbook.host_address(lab, "zentral-backup")
    probe = lab.ssh(backup, f"sudo -n runuser -u resticsrv -- touch /srv/restic/{RETIRED}/probe")
    assert probe.returncode != 0, "the backup service user can still write to the retired repository"
    listing = lab.ssh(backup, f"sudo -n runuser -u resticsrv -- ls /srv/restic/{RETIRED}")
    assert listing.returncode == 0 and "config" in listing.stdout.split(), listing.stdout + listing.stderr


def test_ledger_and_history_say_so(retired):
    lab, _, _, p = retired
    db = sqlite3.connect(lab.state / "ledger.sqlite")
    try:
        (run_id, selection, result) = db.execute(
            "SELECT id, selection, result FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        steps = db.execute("SELECT site, step, result FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
    finally:
        db.close()
    assert selection == f"retire {RETIRED}" and result == "ok", (selection, result)
    assert steps == [(RETIRED, "teardown", "ok"), ("zentral", "converge", "ok"), (RETIRED, "retired", "ok")], steps
    from basisit.verify import history

    row = history.retired(history.path_in(lab.state)).get(RETIRED)
    assert row and row["backend"] == "lab" and row["keep_until"] in p.stdout, (row, p.stdout[-1000:])


def test_nalbach_and_zentral_still_verify(retired):
    lab, inv, _, _ = retired
    state = playbook.verify_state(lab, "retire-verify")
    p, doc = playbook.verify(state, "--zentral", "--jobs", "2", inventory=inv)
    assert p.returncode == 0 and not playbook.failing(doc), (
        f"rc {p.returncode}; failing {[r['test_id'] + ' ' + r['host'] for r in playbook.failing(doc)]}\n{p.stdout[-3000:]}"
    )
    passed = playbook.by_test(doc, "pass")
    assert "test_backup::test_htpasswd_entries_are_bcrypt" in passed, sorted(passed)
    if retired[2]["repository"]:
        assert "test_backup::test_retired_kommunen_repositories_kept_read_only" in passed, sorted(passed)
