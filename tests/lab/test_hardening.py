"""The hardening checks Lynis asked for (tests/compliance/test_hardening.py) against the session's
converged lab: they pass on the converged site, fail with their control ids when the standard's
files are broken on a host, and the next converge of base heals the host.

Runs after test_verify (conftest's module order), on nalbach-dc1; reports go to a state directory
of this module. The breaks are undone by the converge, and in a `finally` should it fail.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import playbook
import pytest

pytestmark = pytest.mark.lab


ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
SELECT = "login_defs or shell_umask or idle_shell or core_dumps or module_not_loadable or ipv6_redirects or cron_files"
# The standard's files, saved before the break and restored in the `finally` if the converge fails.
FILES = [
    "/etc/login.defs",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/profile.d/basisit-timeout.sh",
    "/etc/security/limits.d/90-basisit-coredump.conf",
    "/etc/modprobe.d/basisit-blacklist.conf",
    "/etc/sysctl.d/90-basisit-net.conf",
    "/etc/crontab",
]
BREAK = (
    "sed -i 's/^UMASK.*/UMASK\t022/; s/^PASS_MIN_DAYS.*/PASS_MIN_DAYS\t0/' /etc/login.defs"
    " && sed -i '/^umask /d' /etc/bash.bashrc /etc/profile"
    " && rm /etc/profile.d/basisit-timeout.sh /etc/security/limits.d/90-basisit-coredump.conf"
    " && sed -i '/usb-storage/d' /etc/modprobe.d/basisit-blacklist.conf"
)
# Where the host has IPv6 (the lab's bridges carry none, the kernel may still offer it).
BREAK_IPV6 = (
    " && sed -i 's/^net.ipv6.conf.all.accept_redirects.*/net.ipv6.conf.all.accept_redirects = 1/'"
    " /etc/sysctl.d/90-basisit-net.conf && sysctl -q -e -p /etc/sysctl.d/90-basisit-net.conf"
)


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the hardening checks")
    state = playbook.verify_state(lab, "verify-hardening")
    return lab, state


def verify(state: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--zentral", "--jobs", "2", *args)


def test_hardening_checks_pass_on_every_converged_host(site):
    _lab, state = site
    p, doc = verify(state, "--", "-k", SELECT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    hosts = {r["host"] for r in doc["results"] if r["state"] == "pass"}
    assert hosts >= set(playbook.EXPECTED_HOSTS), sorted(set(playbook.EXPECTED_HOSTS) - hosts)
    ids = {r["test_id"] for r in doc["results"] if r["state"] == "pass"}
    assert {
        "test_hardening::test_login_defs",
        "test_hardening::test_interactive_shell_umask",
        "test_hardening::test_idle_shell_timeout",
        "test_hardening::test_no_core_dumps_in_a_session",
        "test_hardening::test_module_not_loadable",
    } <= ids, sorted(ids)


def test_broken_hardening_fails_with_controls_then_converge_heals(site):
    lab, state = site
    dc = next(str(h.address) for h in lab.estate.hosts() if h.name == "nalbach-dc1")
    saved = "/root/hardening-saved.tar"
    assert lab.ssh(dc, f"tar -cPf {saved} $(ls -d {' '.join(FILES)} 2>/dev/null)").returncode == 0
    ipv6 = lab.ssh(dc, "test -e /proc/sys/net/ipv6/conf/all/accept_redirects").returncode == 0
    cron = lab.ssh(dc, "test -e /etc/crontab").returncode == 0
    r = lab.ssh(dc, BREAK + (BREAK_IPV6 if ipv6 else "") + (" && chmod 0644 /etc/crontab" if cron else ""))
    assert r.returncode == 0, r.stderr
    healed = None
    try:
        p, doc = verify(state, "--", "-k", SELECT)
        assert p.returncode == 1, p.stdout[-3000:]
        bad = [r for r in doc["results"] if r["state"] == "fail"]
        assert {r["host"] for r in bad} == {"nalbach-dc1"}, [r["nodeid"] for r in bad]
        by_id = {}
        for r in bad:
            by_id.setdefault(r["test_id"], []).append(r)
        assert {
            "test_hardening::test_login_defs",
            "test_hardening::test_interactive_shell_umask",
            "test_hardening::test_idle_shell_timeout",
            "test_hardening::test_no_core_dumps_in_a_session",
            "test_hardening::test_module_not_loadable",
            *(["test_hardening::test_ipv6_redirects_ignored"] if ipv6 else []),
            *(["test_hardening::test_cron_files_for_root_only"] if cron else []),
        } == set(by_id), sorted(by_id)
        umask = next(r for r in by_id["test_hardening::test_login_defs"] if "UMASK" in r["nodeid"])
        assert "cis-deb12:5.4.3.3" in umask["controls"]
        (usb,) = by_id["test_hardening::test_module_not_loadable"]
        assert "usb-storage" in usb["nodeid"] and "cis-deb12:1.1.1.9" in usb["controls"]
        assert "cis-deb12:1.5.3" in by_id["test_hardening::test_no_core_dumps_in_a_session"][0]["controls"]
        assert "cis-deb12:5.4.3.2" in by_id["test_hardening::test_idle_shell_timeout"][0]["controls"]
        healed, _ = playbook.run(lab, "--tags", "login,coredump,modprobe,sysctl,cron", limit="nalbach-dc1")
        assert healed.returncode == 0, healed.stdout[-4000:]
    finally:
        if healed is None or healed.returncode != 0:
            lab.ssh(dc, f"tar -xPf {saved} && sysctl -q -e -p /etc/sysctl.d/90-basisit-net.conf")
        lab.ssh(dc, f"rm -f {saved}")
    recap = playbook.recap(healed.stdout)
    assert recap["nalbach-dc1"]["changed"] >= 5, healed.stdout[-4000:]
    p, doc = verify(state, "--", "-k", SELECT)
    assert p.returncode == 0, p.stdout[-4000:]


def test_lynis_after_figure(site, converged):
    """Opt-in ($BASISIT_HARDENING_RESULTS=FILE): Lynis in every host of this freshly converged lab,
    merged into FILE as bench/hardening.py's "after" figure; the audit leaves nothing in a guest."""
    out = os.environ.get("BASISIT_HARDENING_RESULTS")
    if not out:
        pytest.skip("set BASISIT_HARDENING_RESULTS=bench/results/hardening.json to record the Lynis figure")
    lab, _state = site
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_hardening", ROOT / "bench" / "hardening.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    first = playbook.recap(converged[1].stdout)
    converge = {
        "command": f"ansible-playbook playbooks/site.yml -l {playbook.LIMIT} (the lab tests' session converge)",
        "exit_status": 0,
        "seconds": round(converged[2], 1),
        "changed": sum(v["changed"] for v in first.values()),
        "failed_hosts": [],
    }
    after = bench.record_after(
        lab.state, Path(out), converge, only=playbook.EXPECTED_HOSTS, note="after = a fresh lab (tests/lab session)"
    )
    assert set(after["hosts"]) >= playbook.EXPECTED_HOSTS, sorted(after["hosts"])
    assert all("hardening_index" in h for h in after["hosts"].values()), after["hosts"]
    assert not any(h["left_behind"] for h in after["hosts"].values()), after["hosts"]
