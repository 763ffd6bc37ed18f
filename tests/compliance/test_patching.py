"""Patching: every host fetches through zentral's package proxy and really installs security updates.

Effective state, not configuration alone: apt's configuration as apt reads it (`apt-config dump`),
a real `apt-get update` through the proxy (which in the lab reaches Debian's mirror through the
control host's forwarder), the security updates apt would install now (`apt-get -s upgrade`) and
since when base's patch helper has seen them pending, the stamp of the last successful
unattended-upgrades run. On the proxy host: what apt-cacher-ng listens on and that it refuses
anything but Debian's archives (roles/base, roles/package_proxy).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from basisit import policy
from basisit.verify.patching import UPDATE_TIMEOUT, overdue, pending_security, update_failure
from basisit.verify.suite import ROOT, estate

pytestmark = pytest.mark.role("any")

STAMP = "/var/lib/apt/periodic/unattended-upgrades-stamp"
LEDGER = "/var/lib/basisit/pending-security.json"


def _proxy(target) -> dict:
    return policy.package_proxy(estate(), next(h for h in estate().hosts() if h.name == target.name))


@pytest.fixture(scope="module")
def apt_config(host) -> str:
    return host.check_output("apt-config dump")


@pytest.mark.feature("base/updates")
@pytest.mark.controls("gs:OPS.1.1.3.A3", "cis-deb12:1.2.1.2")
def test_apt_uses_the_package_proxy(target, host, apt_config):
    """apt's HTTP proxy is zentral's package proxy, and its sources are the standard's archives."""
    want = _proxy(target)["url"]
    got = re.findall(r'^Acquire::http::Proxy "([^"]*)";', apt_config, re.M)
    assert got == [want], f"{target.name}: Acquire::http::Proxy {got}, expected [{want!r}]"
    patching = estate().standard.services.patching
    allowed = {patching.mirror.rstrip("/"), patching.security_mirror.rstrip("/")}
    uris = set(host.check_output("apt-get indextargets --format '$(REPO_URI)' | sort -u").split())
    foreign = sorted(u for u in uris if u.rstrip("/") not in allowed)
    assert uris and not foreign, (
        f"{target.name}: apt sources outside the standard's archives: {foreign or 'none at all'}"
    )


@pytest.mark.feature("base/patching")
@pytest.mark.controls("gs:OPS.1.1.3.A3", "gs:OPS.1.1.3.A15", "cis-deb12:1.2.1.2")
def test_apt_update_succeeds_through_the_proxy(target, host):
    """A real `apt-get update` through the proxy: every list fetched (`--error-on=any`)."""
    proxy = _proxy(target)["url"]
    r = host.run(f"timeout {UPDATE_TIMEOUT} apt-get -q update --error-on=any 2>&1")
    assert r.rc == 0, update_failure(target.name, proxy, r.stdout + r.stderr, r.rc)


@pytest.mark.feature("base/patching")
@pytest.mark.controls("gs:OPS.1.1.3.A15", "gs:SYS.2.1.A3", "cis-deb12:1.2.2.1")
def test_no_security_update_pending_too_long(target, host):
    """No security update has been pending longer than the standard allows (its first-seen time
    from base's patch helper, which records after every daily unattended-upgrades run)."""
    max_days = estate().standard.services.patching.max_pending_security_days
    sim = host.run("apt-get -s -o Debug::NoLocking=1 upgrade")
    assert sim.rc == 0, f"{target.name}: apt-get -s upgrade failed: {sim.stderr.strip()[-300:]}"
    pending = pending_security(sim.stdout)
    raw = host.run("cat %s", LEDGER)
    assert raw.rc == 0, f"{target.name}: {LEDGER} missing: base's patch helper never recorded pending updates"
    ledger = json.loads(raw.stdout or "{}")
    late = overdue(pending, ledger, time.time(), max_days)
    assert not late, f"{target.name}: security updates pending for more than {max_days} days: {late}"


@pytest.mark.feature("base/patching")
@pytest.mark.controls("gs:OPS.1.1.3.A3", "gs:OPS.1.1.3.A15", "cis-deb12:1.2.2.1")
def test_unattended_upgrades_ran_recently(target, host):
    """The last successful unattended-upgrades run (the stamp apt's daily job and base's patch
    helper touch only on success) is younger than the standard's max_upgrade_age_hours."""
    hours = estate().standard.services.patching.max_upgrade_age_hours
    r = host.run("stat -c %%Y %s", STAMP)
    assert r.rc == 0, f"{target.name}: no successful unattended-upgrades run ({STAMP} missing)"
    age = time.time() - int(r.stdout.strip())
    assert age <= hours * 3600, (
        f"{target.name}: last successful unattended-upgrades run {age / 3600:.1f} h ago (> {hours} h)"
    )


# --- the package proxy (zentral) ----------------------------------------------------------


@pytest.mark.role("package_proxy")
@pytest.mark.feature("package_proxy")
@pytest.mark.controls("gs:OPS.1.1.3.A10", "gs:SYS.1.1.A19")
def test_package_proxy_listens_only_where_the_matrix_reaches(target, host):
    p = _proxy(target)
    r = host.check_output("ss -Hltn 'sport = :%s'", str(p["port"]))
    local = sorted({ln.split()[3].rsplit(":", 1)[0] for ln in r.splitlines() if ln.strip()})
    assert local == sorted(p["listen"]), f"{target.name}: apt-cacher-ng listens on {local}, expected {p['listen']}"


@pytest.mark.role("package_proxy")
@pytest.mark.feature("package_proxy")
@pytest.mark.controls("gs:OPS.1.1.3.A10")
def test_package_proxy_serves_only_debian_archives(target, host):
    """Another host through the proxy gets 403, a CONNECT tunnel is refused; the archive is served."""
    p = _proxy(target)
    curl = f"curl -s -m 30 -o /dev/null -x {p['url']}"
    other = host.run(f"{curl} -w '%{{http_code}}' http://example.org/")
    assert other.stdout.strip() == "403", f"{target.name}: http://example.org/ through the proxy: {other.stdout!r}"
    tunnel = host.run(f"{curl} -p -w '%{{http_connect}}' https://deb.debian.org/")
    assert tunnel.rc != 0 and tunnel.stdout.strip() != "200", (
        f"{target.name}: CONNECT through the proxy: {tunnel.stdout!r}"
    )
    mirror = estate().standard.services.patching.security_mirror.rstrip("/")
    suite = yaml.safe_load((ROOT / "inventory/group_vars/all/basisit_image.yml").read_text())["basisit_image_suite"]
    ok = host.run(f"{curl} -w '%{{http_code}}' {mirror}/dists/{suite}-security/InRelease")
    assert ok.stdout.strip() == "200", f"{target.name}: the security archive through the proxy: {ok.stdout!r}"
