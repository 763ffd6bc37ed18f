"""`basisit verify` against a converged lab site (nalbach + zentral of the session lab).

After the roles converged nalbach, the run passes; then hosts are broken on purpose and the
matching checks must fail with their control ids: sshd password login re-enabled, a forward
rule removed from the gateway's firewall; an expired waiver fails the run; a stopped host is
reported unreachable within the connect timeout; the newest backup snapshot missing fails the
freshness check; a forward chain that accepts (gateway) or is missing (DC) fails the base check;
SSH admitted from the zentral gateway fails the forbidden-flow check (SSH comes from zentral's
management host only); samba-tool's secret never shows in a command line, its error or the
DC's journal.

Reports go to a state directory of this module (the lab's site facts are copied there), so the
lab's own state is not touched. Every break is undone in a `finally`, so the site is left
converged for tests/lab/test_rollout.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import playbook
import pytest
import yaml
from playbook import failing, host_address, verify

from basisit import secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"


@pytest.fixture(scope="module")
def site(converged):
    """nalbach + zentral converged; a verify state dir with copies of the lab's site facts and secrets."""
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for verify")
    # A fresh site has no snapshot yet (the timer runs at night): take the first backup now.
    for h in lab.estate.site(KOMMUNE).hosts_with_role("backup_client"):
        r = lab.ssh(str(h.address), "systemctl start basisit-backup.service", timeout=300)
        assert r.returncode == 0, f"{h.name}: first backup failed: {r.stderr}"
    # Under the lab's state (removed by the session's sweep), not pytest's tmp_path: pytest prunes
    # old basetemps, which another pytest on the machine would do under a running module.
    state = playbook.verify_state(lab, "verify")
    return lab, state


def test_converged_site_passes(site):
    _lab, state = site
    p, doc = verify(state, "--jobs", "2")
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    s = doc["summary"]
    assert s["fail"] == 0 and s["pass"] > 100, s
    assert {h["name"] for h in doc["run"]["hosts"] if h["reachable"]} >= {"nalbach-gw", "nalbach-dc1"}


def test_sshd_password_login_reenabled_fails_with_controls(site):
    lab, state = site
    addr = host_address(lab, "nalbach-dc1")
    broken = "/etc/ssh/sshd_config.d/00-broken.conf"
    r = lab.ssh(addr, f"echo 'PasswordAuthentication yes' > {broken} && systemctl reload ssh")
    assert r.returncode == 0, r.stderr
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "sshd or password")
    finally:
        lab.ssh(addr, f"rm -f {broken} && systemctl reload ssh")
    assert p.returncode == 1
    bad = {(r["test_id"], r["host"]): r for r in failing(doc)}
    opt = next(r for k, r in bad.items() if k[1] == "nalbach-dc1" and "passwordauthentication" in r["nodeid"])
    assert {"gs:SYS.1.3.A8", "devsec:sshd-27"} <= set(opt["controls"])
    # The real client still gets no password prompt: the standard's `AuthenticationMethods
    # publickey` holds even with PasswordAuthentication re-enabled (defence in depth), and the
    # login check reports what a client sees, not the option.
    login = [r for r in doc["results"] if r["test_id"] == "test_base::test_ssh_password_login_refused"]
    assert any(r["host"] == "nalbach-dc1" and r["state"] == "pass" for r in login), login
    assert all(r["host"] == "nalbach-dc1" for r in failing(doc)), [r["nodeid"] for r in failing(doc)]


def test_forward_rule_removed_fails_with_controls(site):
    lab, state = site
    gw = host_address(lab, "nalbach-gw")
    find = (
        "nft -a list chain inet basisit forward | sed -n 's/.*comment \"zentral-mgmt-ssh\" # handle \\([0-9]*\\)/\\1/p'"
    )
    handles = lab.ssh(gw, find).stdout.split()
    assert handles, "the gateway has no zentral-mgmt-ssh forward rule to remove"
    try:
        for h in handles:
            assert lab.ssh(gw, f"nft delete rule inet basisit forward handle {h}").returncode == 0
        p, doc = verify(state, "--jobs", "2", "--", "-k", "forward or allowed_flow")
    finally:
        lab.ssh(gw, "systemctl reload nftables || systemctl restart nftables")
    assert p.returncode == 1
    bad = failing(doc)
    soll_ist = [r for r in bad if r["test_id"] == "test_gateway::test_forward_rules_match_allow_matrix"]
    assert soll_ist and "gs:NET.1.1.A15" in soll_ist[0]["controls"]
    flows = [r for r in bad if r["test_id"] == "test_reachability::test_allowed_flow_connects"]
    assert flows and all("zentral-mgmt-ssh" in r["nodeid"] for r in flows)
    assert all("gs:NET.1.1.A5" in r["controls"] for r in flows)


def test_expired_waiver_fails(site):
    _, state = site
    inv = state / "inventory-expired-waiver"
    shutil.copytree(ROOT / "inventory", inv, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
    waiver = {
        "id": "cis-deb12:5.1.14",
        "scope": {"kommune": KOMMUNE},
        "justification": "Expired on purpose: an expired waiver must fail the run.",
        "approver": "lab test",
        "expires": "2001-01-01",
    }
    (inv / "waivers.yaml").write_text(yaml.safe_dump({"waivers": [waiver]}), encoding="utf-8")
    p, doc = verify(state, "--jobs", "2", "--", "-k", "ssh_reachable", inventory=inv)
    assert p.returncode == 1
    (r,) = failing(doc)
    assert r["test_id"] == "waivers::expired" and r["controls"] == ["cis-deb12:5.1.14"]


def test_stopped_host_reported_unreachable(site):
    lab, state = site
    from basisit.lab import host, names

    site_model = lab.estate.site(KOMMUNE)
    ep = site_model.hosts_with_role("endpoint")[0]
    machine = names.machine(site_model, ep, lab.prefix)
    resolv = lab.ssh(str(ep.address), "cat /etc/resolv.conf").stdout
    host.stop(lab.state, machine)
    try:
        t0 = time.monotonic()
        p, doc = verify(state, "--jobs", "2", "--connect-timeout", "3", "--", "-k", "ssh_reachable or sshd_option")
        took = time.monotonic() - t0
    finally:
        lab.cli("lab", "up", "--kommune", KOMMUNE)
    # started again by `lab up`, the host keeps what the roles configured (no re-seeded resolv.conf)
    assert lab.ssh(str(ep.address), "cat /etc/resolv.conf").stdout == resolv
    assert p.returncode == 3  # nothing failed; a host did not answer: unreachable, not verified
    assert f"{ep.name}: unreachable over ssh" in p.stdout
    mine = [r for r in doc["results"] if r["host"] == ep.name]
    assert mine and all(r["state"] == "unreachable" for r in mine)
    assert all(r["state"] == "pass" for r in doc["results"] if r["host"] != ep.name)
    assert took < 120


def test_newest_snapshot_missing_fails_with_controls(site):
    """The Kommune's snapshots moved out of the zentral repository: freshness fails (CON.3.A5).

    In the lab every snapshot is minutes old, so with only the newest gone an older one would
    still (rightly) keep the site within its RPO; the snapshots are all moved aside, which is
    what "the newest is missing" means for a site whose older ones are also gone or stale.
    """
    lab, state = site
    backup = host_address(lab, "zentral-backup")
    snaps = f"/srv/restic/{KOMMUNE}/snapshots"
    aside = f"/root/snapshots-aside-{KOMMUNE}"
    moved = lab.ssh(backup, f"mkdir -p {aside} && ls {snaps} | wc -l && mv {snaps}/* {aside}/")
    assert moved.returncode == 0 and int(moved.stdout.split()[0]) >= 1, moved.stdout + moved.stderr
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "snapshot or restore")
    finally:
        lab.ssh(backup, f"mv {aside}/* {snaps}/ && rmdir {aside}")
    assert p.returncode == 1, p.stdout[-3000:]
    fresh = [r for r in failing(doc) if r["test_id"] == "test_backup::test_newest_snapshot_within_rpo"]
    assert fresh and "gs:CON.3.A5" in fresh[0]["controls"], [r["nodeid"] for r in failing(doc)]
    assert lab.ssh(backup, f"ls {snaps} | wc -l").stdout.strip() == moved.stdout.split()[0]


def test_forward_chain_accepting_fails_with_controls(site):
    """A host whose forward chain accepts (or is missing) fails the base check: a router too."""
    lab, state = site
    gw, dc = host_address(lab, "nalbach-gw"), host_address(lab, "nalbach-dc1")
    assert lab.ssh(gw, "nft chain inet basisit forward '{ policy accept; }'").returncode == 0
    assert lab.ssh(dc, "nft delete chain inet basisit forward").returncode == 0
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "firewall_forward_default_deny")
    finally:
        for addr in (gw, dc):
            lab.ssh(addr, "systemctl reload nftables || systemctl restart nftables")
    assert p.returncode == 1
    bad = [r for r in failing(doc) if r["test_id"] == "test_base::test_firewall_forward_default_deny"]
    assert {r["host"] for r in bad} == {"nalbach-gw", "nalbach-dc1"}, [r["nodeid"] for r in failing(doc)]
    assert all({"gs:NET.3.2.A2", "cis-deb12:3.3.1"} <= set(r["controls"]) for r in bad)
    for addr in (gw, dc):
        assert "policy drop" in lab.ssh(addr, "nft list chain inet basisit forward").stdout


def test_samba_secret_never_on_a_command_line_nor_in_an_error(site):
    """basisit-samba-tool takes the secret on stdin; samba-tool's refusal is shown, the secret is not."""
    lab, _ = site
    dc = host_address(lab, "nalbach-dc1")
    weak = "Weak7x"  # refused by the domain's policy (min_length 12)
    assert lab.ssh(dc, "umask 077; cat > /root/weak.secret", input=weak + "\n").returncode == 0
    # while the wrapper runs, no process's command line holds the secret (the shells here name only the
    # file). The probe polls until the wrapper has exited, so it cannot miss it however fast samba-tool is.
    r = lab.ssh(
        dc,
        "basisit-samba-tool user create labtest-weak @SECRET@ < /root/weak.secret > /root/weak.out 2>&1 & pid=$!;"
        " polls=0; : > /root/cmdline-hits;"
        " while kill -0 $pid 2>/dev/null && [ $polls -lt 100000 ]; do"
        "  grep -l -F -f /root/weak.secret /proc/[0-9]*/cmdline >> /root/cmdline-hits 2>/dev/null;"
        "  polls=$((polls+1));"
        ' done; wait $pid; rc=$?; cat /root/weak.out; echo "polls=$polls"; exit $rc',
    )
    hits = lab.ssh(dc, "cat /root/cmdline-hits").stdout
    lab.ssh(dc, "rm -f /root/cmdline-hits /root/weak.out /root/weak.secret")
    assert r.returncode != 0, r.stdout
    assert weak not in r.stdout + r.stderr
    assert "check_password_restrictions" in r.stdout + r.stderr, r.stdout + r.stderr  # the reason is readable
    polls = int(r.stdout.rsplit("polls=", 1)[1].split()[0])
    assert polls > 0, "the probe never saw the wrapper running"
    assert hits.strip() == "", hits
    # the converged DC's journal holds neither the Administrator nor the probe password
    for name in ("ad-administrator", "probe.secret"):
        secret = secrets.value(lab.state / "secrets" / KOMMUNE / name)
        assert lab.ssh(dc, "umask 077; cat > /root/find.secret", input=secret + "\n").returncode == 0
        g = lab.ssh(dc, "journalctl --no-pager -q | grep -c -F -f /root/find.secret; rm -f /root/find.secret")
        assert g.stdout.strip() == "0", f"{name} found in the DC's journal"


def test_ssh_from_the_zentral_gateway_admitted_fails_with_controls(site):
    """SSH comes from zentral's management host only: admitting the zentral gateway is seen."""
    lab, state = site
    zgw = next(h for h in lab.estate.zentral.hosts if "zentral_gateway" in h.roles)
    gw, dc = host_address(lab, "nalbach-gw"), host_address(lab, "nalbach-dc1")
    opened = f'ip saddr {zgw.address} tcp dport 22 accept comment \\"broken-on-purpose\\"'
    assert lab.ssh(gw, f"nft insert rule inet basisit forward {opened}").returncode == 0
    assert lab.ssh(dc, f"nft insert rule inet basisit input {opened}").returncode == 0
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "forbidden_flow")
    finally:
        for addr in (gw, dc):
            lab.ssh(addr, "systemctl reload nftables || systemctl restart nftables")
    assert p.returncode == 1
    bad = [r for r in failing(doc) if r["test_id"] == "test_reachability::test_forbidden_flow_times_out"]
    assert [r["nodeid"] for r in bad] and all(f"{zgw.name}-nalbach-dc1" in r["nodeid"] for r in bad), bad
    assert all({"gs:OPS.1.1.2.A16", "gs:NET.1.1.A21"} <= set(r["controls"]) for r in bad)
    assert "broken-on-purpose" not in lab.ssh(dc, "nft list ruleset").stdout


def test_removed_admin_and_bootstrap_sudo_rule_fail_then_converge_removes_them(site):
    """A former admin (account, key, admin group) and cloud-init's NOPASSWD rule: both checks fail
    with their controls, and the next converge of base removes both."""
    lab, state = site
    dc = host_address(lab, "nalbach-dc1")
    plant = (
        "useradd -m -u 2999 -G basisit-admins -s /bin/bash ops-former"
        " && install -d -m 0700 -o ops-former /home/ops-former/.ssh"
        " && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnownFormerAdminKeyForTheLabTestOnly0000 former'"
        " > /home/ops-former/.ssh/authorized_keys"
        " && echo 'ops-ego ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users"
        " && chmod 0440 /etc/sudoers.d/90-cloud-init-users"
        # the former admin is still at work (an open session's process)
        " && (setsid runuser -u ops-former -- sleep 3600 </dev/null >/dev/null 2>&1 &) && sleep 1 && pgrep -U 2999"
    )
    r = lab.ssh(dc, plant)
    assert r.returncode == 0, r.stderr
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "unlisted_person or admin_group or sudo_only")
        assert p.returncode == 1
        bad = {r["test_id"]: r for r in failing(doc) if r["host"] == "nalbach-dc1"}
        assert {
            "test_base::test_no_local_account_of_an_unlisted_person",
            "test_base::test_admin_group_only_named_admins",
            "test_base::test_sudo_only_through_the_admin_group",
            "test_base::test_sudo_only_named_admins",
        } <= set(bad), sorted(bad)
        assert "gs:ORP.4.A2" in bad["test_base::test_no_local_account_of_an_unlisted_person"]["controls"]
        assert "gs:OPS.1.1.2.A16" in bad["test_base::test_sudo_only_through_the_admin_group"]["controls"]
        healed, _ = playbook.run(lab, "--tags", "admins,sudo", limit="nalbach-dc1")
        assert healed.returncode == 0, healed.stdout[-4000:]
    finally:
        lab.ssh(
            dc,
            "pkill -KILL -U 2999; userdel -r -f ops-former 2>/dev/null; rm -f /etc/sudoers.d/90-cloud-init-users; true",
        )
    left = lab.ssh(dc, "getent passwd ops-former; ls /home; ls /etc/sudoers.d").stdout
    assert "ops-former" not in left and "90-cloud-init-users" not in left, left
    assert lab.ssh(dc, "pgrep -U 2999").returncode == 1, "a process of the removed admin still runs"
    assert "ops-former" in healed.stdout and "90-cloud-init-users" in healed.stdout  # the converge removed them
