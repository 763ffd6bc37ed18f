"""A patch path (issue 12, item 3) on the converged session lab (nalbach + zentral).

zentral's management host runs the package proxy (apt-cacher-ng); every host's apt fetches
through it; in the lab the proxy's only way out is the forwarder `basisit lab up` runs on the
control host (GET/HEAD, to the host's Debian mirrors, for the proxy host only). First the checks
pass on every host (the converge ran unattended-upgrades through that path). Then the lab's
upstream is stopped: the apt-get update check fails with a message that names the upstream;
`lab up` starts it again.

The break of the proxy itself, of the unattended-upgrades stamp and of a pending security update
(its test downgrades a package below its security update) is on branch `pat-break`: its setup
found no package to downgrade in CI (bookworm's main archive is `oldstable` now; the filter
looked for `bookworm`/`stable`), so the rest of it never ran.
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
