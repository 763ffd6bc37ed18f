"""A patch path (issue 12, item 3) on the converged session lab (nalbach + zentral).

zentral's management host runs the package proxy (apt-cacher-ng); every host's apt fetches
through it; in the lab the proxy's only way out is the forwarder `basisit lab up` runs on the
control host (GET/HEAD, to the host's Debian mirrors, for the proxy host only). First the checks
pass on every host (the converge ran unattended-upgrades through that path). Then three breaks
at once: the proxy stopped (the update check fails on every host, naming the package proxy), one
host's last unattended-upgrades run aged 5 days (the recency check fails there) and a security
update left pending for 30 days on the endpoint (the pending check fails there, naming it); the
next converge heals all three, installing that update. Last the lab's upstream is stopped: the
apt-get update check fails with a message that names the upstream; `lab up` starts it again.

The pending security update does not depend on which packages Debian's archives happen to hold
older versions of (an earlier break downgraded to the release's version and found none once
bookworm's point releases had folded the updates in): it takes an installed package whose
installed version is the security archive's candidate, fetches that very .deb through the proxy,
relabels it with a lower version (`<version>~basisitlab1`, same files) and installs it with dpkg.
apt then really sees the security archive's version pending over the installed one, the check
judges that, and the converge's unattended-upgrade really installs it from the archive.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import playbook
import pytest
from playbook import by_test as _by_test
from playbook import host_address as _addr

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
KOMMUNE = "nalbach"
UPDATE = "test_patching::test_apt_update_succeeds_through_the_proxy"
PENDING = "test_patching::test_no_security_update_pending_too_long"
RECENT = "test_patching::test_unattended_upgrades_ran_recently"
PROXY_CHECKS = {
    "test_patching::test_apt_uses_the_package_proxy",
    UPDATE,
    PENDING,
    RECENT,
    "test_patching::test_package_proxy_listens_only_where_the_matrix_reaches",
    "test_patching::test_package_proxy_serves_only_debian_archives",
}
SELECT = "test_patching or packages"
ENDPOINT = "nalbach-nal-ws-001"
# Leave one security update pending on a host, deterministically, and print `<package> <version>`
# (the version the security archive offers, which the converge must install again): the smallest
# installed package (not required/important) whose installed version is its candidate and comes
# from a -security archive, whose relabelled lower version every installed package still accepts
# (Depends/Pre-Depends satisfied, no Breaks/Conflicts). Its .deb is fetched through the proxy,
# unpacked, its control file's Version set to `<version>~basisitlab1` (sorts lower), rebuilt and
# installed with dpkg; `apt-get check` must then pass. A failure puts the archive's version back.
RELABEL = r"""
import os, subprocess, sys, tempfile, apt, apt_pkg
SUFFIX = "~basisitlab1"
ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
cache = apt.Cache()
rdeps = {}
for q in cache:
    if q.installed is None:
        continue
    for kind in ("Depends", "PreDepends", "Breaks", "Conflicts"):
        for group in q.installed.get_dependencies(kind):
            for d in group.or_dependencies:
                rdeps.setdefault(d.name, []).append((q.name, kind, d.relation_deb, d.version))

def accepted(p, new):
    for q, kind, rel, ver in rdeps.get(p.name, []):
        if q == p.name:
            continue
        hit = not rel or apt_pkg.check_dep(new, rel, ver)
        if (kind in ("Depends", "PreDepends")) != hit:
            return False
    return True

def run(*cmd, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + ": " + (r.stdout + r.stderr).strip()[-800:])
    return r.stdout

chosen = []
for p in cache:
    inst = p.installed
    if inst is None or p.candidate != inst or p.essential or inst.priority in ("required", "important"):
        continue
    if not any(o.archive.endswith("-security") for o in inst.origins):
        continue
    if accepted(p, inst.version + SUFFIX):
        chosen.append((inst.installed_size, p.name, inst.version))
if not chosen:
    sys.exit("no installed package has its candidate from a -security archive (apt-cache policy): "
             "the lab's sources or the proxy lack the security archive")
size, name, version = min(chosen)
with tempfile.TemporaryDirectory(dir="/root") as d:
    try:
        run("apt-get", "-q", "download", f"{name}={version}", cwd=d)
        (deb,) = [f for f in os.listdir(d) if f.endswith(".deb")]
        run("dpkg-deb", "-R", deb, "pkg", cwd=d)
        ctl = os.path.join(d, "pkg", "DEBIAN", "control")
        lines = open(ctl).read().splitlines()
        lines = [f"Version: {version}{SUFFIX}" if ln.startswith("Version:") else ln for ln in lines]
        open(ctl, "w").write("\n".join(lines) + "\n")
        run("dpkg-deb", "-b", "pkg", "relabelled.deb", cwd=d)
        run("dpkg", "--force-confold", "-i", "relabelled.deb", cwd=d)
        run("apt-get", "check")
    except Exception as e:
        subprocess.run(["apt-get", "-y", "-q", "install", "--allow-downgrades", f"{name}={version}"], env=ENV,
                       capture_output=True)
        sys.exit(f"relabelling {name} {version}: {e}")
print(name, version)
"""
# Every pending security update first seen 30 days ago.
AGE_LEDGER = r"""
import json, time
p = "/var/lib/basisit/pending-security.json"
d = json.load(open(p))
json.dump({k: time.time() - 30 * 86400 for k in d}, open(p, "w"))
print(len(d))
"""


@pytest.fixture(scope="module")
def site(converged):
    lab, first, _ = converged
    playbook.assert_recap(first, "converge for the patching checks")
    state = playbook.verify_state(lab, "verify-patching")
    return lab, state


def verify(state: Path, select: str = SELECT) -> tuple[subprocess.CompletedProcess, dict]:
    return playbook.verify(state, "--zentral", "--jobs", "2", "--", "-k", select, timeout=1200)


def _hosts(results: list[dict]) -> set[str]:
    return {r["host"] for r in results}


def _realised(lab) -> set[str]:
    return set(playbook.EXPECTED_HOSTS)


def test_patch_path_checks_pass_and_updates_came_through_the_proxy(site):
    lab, state = site
    mgmt = _addr(lab, "zentral-mgmt")
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    passed = _by_test(doc, "pass")
    assert set(passed) >= PROXY_CHECKS, sorted(passed)
    assert _hosts(passed[UPDATE]) == _realised(lab), passed[UPDATE]
    # the proxy fetched the lists (and any update) through the lab's forwarder
    log = lab.ssh(mgmt, "cat /var/log/apt-cacher-ng/apt-cacher.log").stdout
    assert "InRelease" in log, log[-2000:]
    upstream = (lab.state / "lab" / "aptproxy.log").read_text(encoding="utf-8", errors="replace")
    assert f'{mgmt} "GET http://' in upstream, upstream[-2000:]
    # the forwarder serves zentral's proxy host only: the control host itself is refused
    from basisit.lab import plan

    rec = plan.upstream_record(lab.state)
    assert rec is not None
    handler = urllib.request.ProxyHandler({"http": rec["url"]})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(handler).open(rec["mirror"] + "/dists/bookworm/InRelease", timeout=10)
    assert e.value.code == 403
    # and from the proxy host: anything but a Debian archive is refused by the forwarder too
    r = lab.ssh(mgmt, f"curl -s -o /dev/null -w '%{{http_code}}' -x {rec['url']} http://example.org/")
    assert r.stdout.strip() == "403", r.stdout + r.stderr
    r = lab.ssh(mgmt, f"curl -s -o /dev/null -w '%{{http_connect}}' -p -x {rec['url']} https://deb.debian.org/")
    assert r.stdout.strip() == "403", r.stdout + r.stderr


def test_blocked_source_and_stale_updates_fail_and_the_converge_heals(site):
    lab, state = site
    mgmt, dc, ep = (_addr(lab, n) for n in ("zentral-mgmt", "nalbach-dc1", ENDPOINT))
    healed = None
    try:
        relabel = lab.ssh(ep, "python3 -", input=RELABEL, timeout=300)
        assert relabel.returncode == 0, relabel.stdout + relabel.stderr
        package, version = relabel.stdout.split()
        # apt itself now sees the security archive's version pending over the installed one
        sim = lab.ssh(ep, "apt-get -s -o Debug::NoLocking=1 upgrade", timeout=120)
        assert f"Inst {package} [{version}~basisitlab1] ({version} " in sim.stdout, sim.stdout[-2000:]
        r = lab.ssh(ep, "/usr/local/sbin/basisit-patch --record && python3 -", input=AGE_LEDGER, timeout=120)
        assert r.returncode == 0 and int(r.stdout) >= 1, r.stdout + r.stderr
        r = lab.ssh(dc, "touch -d '5 days ago' /var/lib/apt/periodic/unattended-upgrades-stamp")
        assert r.returncode == 0, r.stderr
        r = lab.ssh(mgmt, "systemctl stop apt-cacher-ng")
        assert r.returncode == 0, r.stderr
        p, doc = verify(state)
        assert p.returncode == 1, p.stdout[-4000:]
        failed = _by_test(doc, "fail")
        assert _hosts(failed.get(UPDATE, [])) == _realised(lab), failed.get(UPDATE)
        for res in failed[UPDATE]:
            assert res["host"] in res["message"] and "package proxy" in res["message"], res["message"]
        assert {"gs:OPS.1.1.3.A15", "cis-deb12:1.2.1.2"} <= set(failed[UPDATE][0]["controls"])
        (late,) = failed[PENDING]
        assert late["host"] == ENDPOINT and f"{package} {version}" in late["message"], late["message"]
        assert "cis-deb12:1.2.2.1" in late["controls"]
        (old,) = failed[RECENT]
        assert old["host"] == "nalbach-dc1" and "h ago" in old["message"], old["message"]
    finally:  # the later tests need the patch path healed, whatever failed above
        healed, _ = playbook.run(lab, "--tags", "service,patching", limit=f"zentral-mgmt,nalbach-dc1,{ENDPOINT}")
    assert healed.returncode == 0, healed.stdout[-4000:]
    recap = playbook.recap(healed.stdout)
    assert recap[ENDPOINT]["changed"] >= 1, healed.stdout[-3000:]  # it installed the pending update
    assert f"{package} {version}" in healed.stdout, healed.stdout[-3000:]
    r = lab.ssh(ep, f"dpkg-query -W -f '${{Version}}' {package}")
    assert r.stdout.strip() == version, r.stdout + r.stderr
    p, doc = verify(state)
    assert p.returncode == 0, p.stdout[-4000:]
    assert set(_by_test(doc, "pass")) >= PROXY_CHECKS
    again, _ = playbook.run(lab, "--tags", "patching", limit=f"nalbach-dc1,{ENDPOINT}")
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(v["changed"] == 0 for v in playbook.recap(again.stdout).values()), again.stdout[-3000:]


def test_an_outage_of_the_lab_upstream_fails_the_update_check_by_name(site):
    lab, state = site
    from basisit.lab import lab as lab_mod

    lab_mod.stop_upstream(lab.state, lab.prefix)
    try:
        p, doc = verify(state, "test_apt_update_succeeds_through_the_proxy")
        failed = _by_test(doc, "fail")
        assert p.returncode == 1 and UPDATE in failed, p.stdout[-4000:]
        for res in failed[UPDATE]:
            assert "upstream" in res["message"], res["message"]
    finally:
        up = lab.cli("lab", "up", *[a for s in lab.sites for a in ("--kommune", s)], check=False)
    assert up.returncode == 0 and "package upstream: forwarder on" in up.stdout, up.stdout + up.stderr
    p, doc = verify(state, "test_apt_update_succeeds_through_the_proxy")
    assert p.returncode == 0, p.stdout[-4000:]
