"""base role, host hardening that Lynis audits (issue 12, bench/hardening.py): login defaults,
interactive shells, core dumps, kernel modules that cannot be loaded, IPv6 redirects.

Each check reads the effect where one can be observed over SSH (the limits of an SSH session,
the umask and timeout of an interactive login shell) and the standard's file where the effect is
the kernel's (module loading: a lab container shares the control host's kernel)."""

from __future__ import annotations

import re

import pytest

from basisit.verify.suite import configured_hard_limit, not_applicable, role_default

pytestmark = pytest.mark.role("any")

LOGIN_DEFS = role_default("base", "base_login_defs")
LOGIN_DEFS_CONTROLS = {
    "UMASK": ("cis-deb12:5.4.3.3", "devsec:os-05"),
    "PASS_MIN_DAYS": ("cis-deb12:5.4.1.2", "devsec:os-05"),
    "SHA_CRYPT_MIN_ROUNDS": ("cis-deb12:5.3.3.4", "gs:ORP.4.A23"),
    "SHA_CRYPT_MAX_ROUNDS": ("cis-deb12:5.3.3.4", "gs:ORP.4.A23"),
}
MODULES = role_default("base", "base_modprobe_blacklist")
# CIS Debian 12: 1.1.1.x filesystem modules and usb-storage, 3.2.x rare network protocols.
MODULE_CONTROLS = {
    "cramfs": ("cis-deb12:1.1.1.1", "devsec:os-10"),
    "freevxfs": ("cis-deb12:1.1.1.2", "devsec:os-10"),
    "hfs": ("cis-deb12:1.1.1.3", "devsec:os-10"),
    "hfsplus": ("cis-deb12:1.1.1.4", "devsec:os-10"),
    "jffs2": ("cis-deb12:1.1.1.5", "devsec:os-10"),
    "squashfs": ("cis-deb12:1.1.1.7", "devsec:os-10"),
    "udf": ("cis-deb12:1.1.1.8", "devsec:os-10"),
    "usb-storage": ("cis-deb12:1.1.1.9", "gs:SYS.2.1.A24"),
    "dccp": ("cis-deb12:3.2.1", "gs:SYS.1.1.A6"),
    "tipc": ("cis-deb12:3.2.2", "gs:SYS.1.1.A6"),
    "rds": ("cis-deb12:3.2.3", "gs:SYS.1.1.A6"),
    "sctp": ("cis-deb12:3.2.4", "gs:SYS.1.1.A6"),
}


def login_defs(host) -> dict[str, str]:
    """/etc/login.defs as shadow reads it: the last uncommented `KEY value` wins."""
    out: dict[str, str] = {}
    for line in host.file("/etc/login.defs").content_string.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            out[parts[0]] = parts[1]
    return out


def interactive_login_shell(host, command: str) -> str:
    """What `command` prints in an interactive login shell (as an admin's session runs it)."""
    out = host.check_output("bash -l -i -c %s 2>/dev/null </dev/null", command)
    return out.strip().splitlines()[-1] if out.strip() else ""


@pytest.mark.feature("base/login")
@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=pytest.mark.controls(*LOGIN_DEFS_CONTROLS[k]), id=k) for k in LOGIN_DEFS]
)
def test_login_defs(host, key):
    got = login_defs(host).get(key)
    assert got == str(LOGIN_DEFS[key]), f"/etc/login.defs {key} = {got}; the standard says {LOGIN_DEFS[key]}"


@pytest.mark.feature("base/login")
@pytest.mark.controls("cis-deb12:5.4.3.3", "devsec:os-05")
def test_interactive_shell_umask(host):
    want = role_default("base", "base_login_umask")
    got = interactive_login_shell(host, "umask")
    assert got.lstrip("0") == str(want).lstrip("0"), f"an interactive login shell has umask {got}; expected {want}"


@pytest.mark.feature("base/login")
@pytest.mark.controls("cis-deb12:5.4.3.2")
def test_idle_shell_timeout(host):
    want = role_default("base", "base_login_tmout")
    lines = host.check_output(
        "bash -l -i -c 'echo tmout=$TMOUT; readonly -p | grep -q \" TMOUT=\" && echo readonly; true' 2>/dev/null </dev/null"
    )
    tmout = re.search(r"^tmout=(\d*)$", lines, re.M)
    assert tmout and tmout.group(1) and int(tmout.group(1)) <= int(want), (
        f"an interactive login shell has no TMOUT <= {want}: {lines!r}"
    )
    assert re.search(r"^readonly$", lines, re.M), "TMOUT is not read-only: a user can switch the timeout off"


@pytest.mark.feature("base/coredump")
@pytest.mark.controls("cis-deb12:1.5.3", "gs:SYS.1.3.A4")
def test_no_core_dumps_in_a_session(host):
    """The hard core limit is 0 in pam_limits' configuration for every user and root (what the next
    login gets) and in this SSH session, and systemd-coredump keeps none.

    The configuration is read as well as the session: verify's connections are multiplexed, so a
    session may have been opened before the limits were changed."""
    conf_text = host.check_output("cat /etc/security/limits.conf /etc/security/limits.d/*.conf 2>/dev/null || true")
    for domain in ("*", "root"):
        value = configured_hard_limit(conf_text, domain, "core")
        assert value == "0", f"pam_limits gives {domain!r} a hard core limit of {value or 'unlimited (no line)'}"
    assert host.check_output("ulimit -H -c") == "0", "an SSH session may dump core (hard limit not 0)"
    conf = host.file("/etc/systemd/coredump.conf.d/basisit.conf")
    assert conf.is_file, "no systemd-coredump drop-in"
    assert re.search(r"^Storage=none$", conf.content_string, re.M), "systemd-coredump stores core dumps"
    assert re.search(r"^ProcessSizeMax=0$", conf.content_string, re.M), "systemd-coredump processes core dumps"


@pytest.fixture(scope="module")
def modprobe_config(host) -> str:
    return host.check_output("cat /etc/modprobe.d/*.conf 2>/dev/null || true")


@pytest.mark.feature("base/modprobe")
@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.controls(*MODULE_CONTROLS.get(m, ("gs:SYS.1.1.A6",))), id=m) for m in MODULES],
)
def test_module_not_loadable(host, modprobe_config, module):
    """`install M /bin/true|false` (modprobe loads nothing) and `blacklist M`; on a VM also not loaded."""
    names = {module, module.replace("-", "_")}
    alt = "|".join(re.escape(n) for n in sorted(names))
    assert re.search(rf"^install\s+({alt})\s+/(usr/)?bin/(true|false)\s*$", modprobe_config, re.M), (
        f"modprobe may load {module}: no `install {module} /bin/true` in /etc/modprobe.d"
    )
    assert re.search(rf"^blacklist\s+({alt})\s*$", modprobe_config, re.M), f"{module} is not blacklisted"
    if host.run("systemd-detect-virt -c -q").rc != 0:  # a container's /proc/modules is the host's
        loaded = {ln.split()[0] for ln in host.file("/proc/modules").content_string.splitlines() if ln.strip()}
        assert not names & loaded, f"{module} is loaded"


@pytest.mark.feature("base/sysctl")
@pytest.mark.controls("cis-deb12:3.3.5", "devsec:sysctl-07")
@pytest.mark.parametrize("key", ["net.ipv6.conf.all.accept_redirects", "net.ipv6.conf.default.accept_redirects"])
def test_ipv6_redirects_ignored(host, key):
    r = host.run("sysctl -n %s", key)
    if r.rc != 0:
        not_applicable("IPv6 is off on this host")
    assert r.stdout.strip() == "0", f"sysctl {key} = {r.stdout.strip()}; expected 0"


CRON_CONTROLS = {
    "/etc/crontab": "cis-deb12:2.4.1.2",
    "/etc/cron.hourly": "cis-deb12:2.4.1.3",
    "/etc/cron.daily": "cis-deb12:2.4.1.4",
    "/etc/cron.weekly": "cis-deb12:2.4.1.5",
    "/etc/cron.monthly": "cis-deb12:2.4.1.6",
    "/etc/cron.d": "cis-deb12:2.4.1.7",
}


@pytest.mark.feature("base/cron")
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.controls(CRON_CONTROLS.get(p, "cis-deb12:2.4.1.2"), "devsec:os-13"), id=p)
        for p in role_default("base", "base_cron_paths")
    ],
)
def test_cron_files_for_root_only(host, path):
    f = host.file(path)
    if not f.exists:
        not_applicable(f"{path} does not exist (cron is not installed)")
    assert (f.user, f.group) == ("root", "root"), f"{path} is owned by {f.user}:{f.group}"
    assert not f.mode & 0o077, f"{path} has mode {f.mode:04o}: group or others may read it"
