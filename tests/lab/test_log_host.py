"""The zentral log host files by source address (issue 12, item 9) in the session lab.

A Kommune host sends raw RFC 3164 lines over TCP that claim HOSTNAME `zentral-log`, `../evil` and
deeper path segments: they land under the sender's model name (nalbach-dc1), a source address
the model does not know lands under unknown/<address>, and no file is made outside the log
directory. Then the old receiver (files by %HOSTNAME%) is put back on purpose: it files the forged
line under zentral-log, the log_host checks fail with their controls, and the next converge of the
receiver heals it. An extra tcp/514 accept at the top of the log host's input chain fails the
firewall check, which names the rule.
"""

from __future__ import annotations

import secrets as pysecrets
import subprocess
from pathlib import Path

import playbook
import pytest
from playbook import failing
from playbook import host_address as addr

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
LOG_DIR = "/var/log/remote"
RECEIVER = "/etc/rsyslog.d/10-basisit-receiver.conf"
# roles/log_host's receiver before issue 12: the path from the HOSTNAME the sender claims.
OLD_RECEIVER = """module(load="imtcp")
template(name="BasisitRemote" type="string" string="/var/log/remote/%HOSTNAME%/syslog.log")
ruleset(name="basisit_remote") {
    action(type="omfile" dynaFile="BasisitRemote" dirCreateMode="0750" fileCreateMode="0640")
    stop
}
input(type="imtcp" port="514" ruleset="basisit_remote")
"""
# A zentral host's name that never sends to the log host (the log host keeps its own logs), so
# a directory of that name can only come from a forged claim. zentral-gw, -mgmt and -backup send
# their logs there (their directories are legitimate).
CLAIMED = "zentral-log"
CLAIMS = [CLAIMED, "../evil", "../../../../../tmp/basisit-evil", ".."]
UNKNOWN_SOURCE = "10.160.168.100"  # a free address of nalbach's server zone (the log rules admit the zone)


@pytest.fixture(scope="module")
def site(converged):
    """nalbach + zentral converged; a verify state directory with copies of the site facts and secrets."""
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the log host")
    state = playbook.verify_state(lab, "verify-log")
    return lab, state


def verify(state: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--zentral", *args)


def forged(claim: str, marker: str) -> str:
    return f"<13>Dec  3 07:00:00 {claim} evil: {marker}\n"


def send_raw(lab, src: str, log: str, lines: str) -> None:
    """Raw syslog over TCP from `src` (bash's /dev/tcp: the claimed HOSTNAME is whatever we write)."""
    r = lab.ssh(src, f"bash -c 'cat > /dev/tcp/{log}/514'", input=lines)
    assert r.returncode == 0, r.stderr


def wait_for(lab, log: str, marker: str, path: str, seconds: int = 40) -> subprocess.CompletedProcess:
    return lab.ssh(
        log,
        f"timeout {seconds} sh -c 'until grep -qF {marker} {path} 2>/dev/null; do sleep 0.3; done'",
        timeout=seconds + 15,
    )


def test_forged_hostname_lands_under_the_senders_name(site):
    lab, state = site
    log, dc = addr(lab, "zentral-log"), addr(lab, "nalbach-dc1")
    assert lab.ssh(log, "touch /root/log-stamp && sleep 1").returncode == 0
    marker = f"forged-{pysecrets.token_hex(6)}"
    send_raw(lab, dc, log, "".join(forged(c, f"{marker}-{i}") for i, c in enumerate(CLAIMS)))
    # from an address of the zone that no model host has: unknown/<address>, never the claimed name
    unknown = f"{marker}-unknown"
    sent = lab.ssh(
        dc,
        f'ip addr add {UNKNOWN_SOURCE}/26 dev host0 && python3 -c "import socket; '
        f"s = socket.create_connection(('{log}', 514), source_address=('{UNKNOWN_SOURCE}', 0), timeout=10); "
        f"s.sendall(b'{forged(CLAIMED, unknown).strip()}\\n'); s.close()\"; "
        f"rc=$?; ip addr del {UNKNOWN_SOURCE}/26 dev host0; exit $rc",
    )
    assert sent.returncode == 0, sent.stderr
    own = f"{LOG_DIR}/nalbach-dc1/syslog.log"
    for i in range(len(CLAIMS)):
        got = wait_for(lab, log, f"{marker}-{i}", own)
        assert got.returncode == 0, f"{CLAIMS[i]!r}: not in {own}"
    assert wait_for(lab, log, unknown, f"{LOG_DIR}/unknown/{UNKNOWN_SOURCE}/syslog.log").returncode == 0
    # the marker is in those two files and nowhere else on the log host; no path of a claim exists
    where = lab.ssh(log, f"grep -rlF {marker} /var /tmp /root /etc /srv 2>/dev/null | sort").stdout.split()
    assert where == sorted([own, f"{LOG_DIR}/unknown/{UNKNOWN_SOURCE}/syslog.log"]), where
    made = lab.ssh(
        log, f"find / -xdev -newer /root/log-stamp \\( -name '*evil*' -o -name {CLAIMED} \\) -print", timeout=180
    )
    assert made.stdout.strip() == "", made.stdout
    assert lab.ssh(log, f"test -e {LOG_DIR}/{CLAIMED} || test -e /tmp/basisit-evil").returncode == 1
    lab.ssh(log, f"rm -rf {LOG_DIR}/unknown/{UNKNOWN_SOURCE} /root/log-stamp")
    p, doc = verify(state, "--jobs", "2", "--", "-k", "test_log_host")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    ran = {r["test_id"] for r in doc["results"] if r["state"] == "pass"}
    assert {
        "test_log_host::test_receiver_files_by_source_address",
        "test_log_host::test_senders_table_is_the_models",
        "test_log_host::test_receiver_admits_only_the_log_rules_sources",
        "test_log_host::test_received_files_only_under_model_names",
        "test_log_host::test_lines_arrive_under_the_senders_model_name",
    } <= ran, sorted(ran)


def test_old_receiver_fails_the_checks_and_converge_heals(site):
    """The receiver before issue 12, put back: the forged line goes to zentral-log/, the checks fail
    with their controls; a converge of the receiver restores it and the checks pass again."""
    lab, state = site
    log, dc = addr(lab, "zentral-log"), addr(lab, "nalbach-dc1")
    before = set(lab.ssh(log, f"ls {LOG_DIR}").stdout.split())
    marker = f"old-{pysecrets.token_hex(6)}"
    try:
        r = lab.ssh(log, f"cat > {RECEIVER} && systemctl restart rsyslog", input=OLD_RECEIVER)
        assert r.returncode == 0, r.stderr
        send_raw(lab, dc, log, forged(CLAIMED, marker))
        # the old configuration really files by the claim (this is the fault the fix removes)
        assert wait_for(lab, log, marker, f"{LOG_DIR}/{CLAIMED}/syslog.log").returncode == 0
        p, doc = verify(state, "--jobs", "2", "--", "-k", "test_log_host")
    finally:
        healed, _ = playbook.run(lab, "--tags", "receiver", limit="zentral-log")
        made = set(lab.ssh(log, f"ls {LOG_DIR}").stdout.split()) - before
        for d in made:  # only what the old receiver created during this test
            lab.ssh(log, f"rm -rf -- {LOG_DIR}/{d}")
    assert p.returncode == 1, p.stdout[-3000:]
    bad = {(r["test_id"], r["host"]): r for r in failing(doc)}
    conf = bad.get(("test_log_host::test_receiver_files_by_source_address", "zentral-log"))
    assert conf and "HOSTNAME" in conf["message"], sorted(bad)
    assert {"gs:OPS.1.1.5.A6", "gs:OPS.1.1.5.A10"} <= set(conf["controls"])
    files = bad.get(("test_log_host::test_received_files_only_under_model_names", "zentral-log"))
    assert files and f"{CLAIMED}/syslog.log" in files["message"], sorted(bad)
    arrive = bad.get(("test_log_host::test_lines_arrive_under_the_senders_model_name", "nalbach-dc1"))
    assert arrive and "filed under /var/log/remote/" in arrive["message"], sorted(bad)
    # not under its model name, but under the name it claimed (the host's own hostname, dc1)
    assert f"{LOG_DIR}/nalbach-dc1/syslog.log" in arrive["message"], arrive["message"]
    assert f"filed under {LOG_DIR}/dc1/syslog.log" in arrive["message"], arrive["message"]
    assert "gs:OPS.1.1.5.A6" in arrive["controls"]
    # healed: the converge wrote the receiver back and restarted rsyslog
    r = playbook.recap(healed.stdout).get("zentral-log", {})
    assert healed.returncode == 0 and r.get("changed", 0) >= 1, healed.stdout[-3000:]
    assert 'lookup("basisit_senders", $fromhost-ip)' in lab.ssh(log, f"cat {RECEIVER}").stdout
    assert CLAIMED in made, made
    p, doc = verify(state, "--jobs", "2", "--", "-k", "test_log_host")
    assert p.returncode == 0, [f"{r['nodeid']}: {r['message']}" for r in failing(doc)]


def test_extra_receiver_accept_fails_naming_it(site):
    lab, state = site
    log = addr(lab, "zentral-log")
    extra = 'tcp dport 514 counter accept comment \\"broken-on-purpose\\"'
    assert lab.ssh(log, f"nft insert rule inet basisit input {extra}").returncode == 0
    try:
        p, doc = verify(state, "--jobs", "2", "--", "-k", "admits_only_the_log_rules")
    finally:
        lab.ssh(log, "systemctl reload nftables || systemctl restart nftables")
    assert p.returncode == 1, p.stdout[-3000:]
    (r,) = failing(doc)
    assert (
        r["test_id"] == "test_log_host::test_receiver_admits_only_the_log_rules_sources" and r["host"] == "zentral-log"
    )
    assert 'comment "broken-on-purpose" (from 0.0.0.0/0)' in r["message"], r["message"]
    assert {"gs:NET.3.2.A2", "gs:SYS.1.1.A19"} <= set(r["controls"])
    assert "broken-on-purpose" not in lab.ssh(log, "nft list ruleset").stdout
