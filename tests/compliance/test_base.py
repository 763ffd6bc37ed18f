"""base role: what every host of the estate promises (roles/base)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from basisit import pwhash
from basisit.model import AUTOMATION_USER
from basisit.verify.suite import connect, context, estate, not_applicable, role_default, sshd_effective, words

pytestmark = pytest.mark.role("any")
LOG_RULES = set(role_default("base", "base_journal_log_rules"))  # matrix rules that carry logs
ADMINS_STORE = role_default("base", "base_admins_password_dir").rsplit("/", 1)[1]  # <state>/secrets/_admins
ADMINS_GROUP = role_default("base", "base_admins_group")

ROUTERS = {"gateway", "zentral_gateway"}
# Local services a role offers beyond the allow matrix (the role's own nftables drop-ins).
ROLE_TCP_SERVICES = {
    "gateway": {53},
    "zentral_gateway": {53},
    "ad_dc": {139, *range(49152, 65536)},  # NetBIOS session, Samba's dynamic RPC port range
}
WEAK_ALGORITHMS = {
    "kex": {"diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group-exchange-sha1"},
    "ciphers": {"3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "arcfour", "arcfour128", "arcfour256"},
    "macs": {
        "hmac-md5",
        "hmac-md5-96",
        "hmac-sha1",
        "hmac-sha1-96",
        "umac-64@openssh.com",
        "hmac-md5-etm@openssh.com",
        "hmac-md5-96-etm@openssh.com",
        "hmac-sha1-etm@openssh.com",
        "hmac-sha1-96-etm@openssh.com",
        "umac-64-etm@openssh.com",
    },
}


@pytest.fixture(scope="module")
def sshd(host) -> dict[str, str]:
    return sshd_effective(host)


# --- reachability of the host itself -------------------------------------------------------


@pytest.mark.controls("gs:SYS.1.1.A23", "gs:OPS.1.1.2.A6")
def test_ssh_reachable(target):
    """The probe `basisit verify` ran first: the host answers SSH within the connect timeout."""
    if target.reachable is False:
        pytest.fail(f"{target.name}: {target.error}", pytrace=False)
    if target.reachable is None:  # a direct pytest run without the probe: connect now
        assert connect(target.name).run("true").rc == 0


# --- sshd hardening (effective configuration) ----------------------------------------------

SSHD_OPTIONS = [
    # option, allowed values, control ids
    ("passwordauthentication", {"no"}, ("gs:SYS.1.3.A8", "wiba:Serversysteme", "devsec:sshd-27")),
    ("permitemptypasswords", {"no"}, ("gs:SYS.1.3.A8", "cis-deb12:5.1.19", "devsec:sshd-28")),
    ("kbdinteractiveauthentication", {"no"}, ("gs:SYS.1.3.A8", "devsec:sshd-29")),
    ("pubkeyauthentication", {"yes"}, ("gs:SYS.1.3.A8", "devsec:sshd-22")),
    ("permitrootlogin", {"no"}, ("gs:OPS.1.1.2.A6", "cis-deb12:5.1.20", "devsec:sshd-06", "wiba:IT-Administration")),
    ("hostbasedauthentication", {"no"}, ("gs:SYS.1.3.A8", "cis-deb12:5.1.10", "devsec:sshd-25")),
    ("ignorerhosts", {"yes"}, ("gs:SYS.1.3.A8", "cis-deb12:5.1.11", "devsec:sshd-23")),
    ("permituserenvironment", {"no"}, ("gs:SYS.1.1.A2", "cis-deb12:5.1.21", "devsec:sshd-17")),
    ("loglevel", {"VERBOSE", "INFO"}, ("gs:OPS.1.1.2.A5", "cis-deb12:5.1.14", "devsec:sshd-13")),
    ("x11forwarding", {"no"}, ("gs:SYS.1.1.A6", "cis-deb12:5.1.8", "devsec:sshd-42")),
    ("allowtcpforwarding", {"no"}, ("gs:SYS.1.1.A6", "cis-deb12:5.1.8", "devsec:sshd-39")),
    ("allowagentforwarding", {"no"}, ("gs:SYS.1.1.A6", "cis-deb12:5.1.8", "devsec:sshd-40")),
    ("permittunnel", {"no"}, ("gs:SYS.1.1.A6", "devsec:sshd-38")),
    ("gatewayports", {"no"}, ("gs:SYS.1.1.A6", "devsec:sshd-41")),
    ("usepam", {"yes"}, ("cis-deb12:5.1.22",)),
]


@pytest.mark.feature("base/sshd")
@pytest.mark.parametrize(
    ("option", "allowed"),
    [pytest.param(o, a, marks=pytest.mark.controls(*c), id=o) for o, a, c in SSHD_OPTIONS],
)
def test_sshd_option(sshd, option, allowed):
    assert sshd.get(option) in allowed, f"sshd -T: {option} {sshd.get(option)}; expected {' or '.join(sorted(allowed))}"


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("cis-deb12:5.1.4", "gs:OPS.1.1.2.A6", "wiba:IT-Administration")
def test_sshd_allow_groups(sshd):
    """Effective AllowGroups: exactly the named admins' group and the automation account's group."""
    expected = {role_default("base", "base_admins_group"), AUTOMATION_USER}
    groups = words(sshd.get("allowgroups", ""))
    assert groups == expected, f"sshd -T: allowgroups {sorted(groups) or 'not set'}; expected {sorted(expected)}"
    assert not sshd.get("allowusers"), f"sshd -T: allowusers {sshd['allowusers']} besides the groups"


SSHD_DROPINS = "/etc/ssh/sshd_config.d"


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("gs:SYS.1.3.A8", "cis-deb12:5.1.1", "devsec:sshd-05")
def test_sshd_config_d_only_managed(host):
    """Base owns sshd_config.d: its drop-in alone (one sorting first would override it)."""
    found = host.check_output(f"find {SSHD_DROPINS} -mindepth 1 -maxdepth 1 -printf '%f\\n'").split()
    extra = sorted(set(found) - {"10-basisit.conf"})
    assert not extra, f"files in {SSHD_DROPINS} base does not manage: {extra}"


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("gs:SYS.1.3.A8", "cis-deb12:5.1.16", "devsec:sshd-19")
def test_sshd_max_auth_tries(sshd):
    assert int(sshd["maxauthtries"]) <= 4


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("cis-deb12:5.1.13", "devsec:sshd-18")
def test_sshd_login_grace_time(sshd):
    assert 1 <= int(sshd["logingracetime"]) <= 60


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("cis-deb12:5.1.7", "devsec:sshd-36", "devsec:sshd-37")
def test_sshd_client_alive(sshd):
    assert int(sshd["clientaliveinterval"]) > 0
    assert 0 < int(sshd["clientalivecountmax"]) <= 3


@pytest.mark.feature("base/sshd")
@pytest.mark.parametrize(
    ("option", "kind"),
    [
        pytest.param(
            "kexalgorithms", "kex", marks=pytest.mark.controls("cis-deb12:5.1.12", "devsec:sshd-02"), id="kex"
        ),
        pytest.param(
            "ciphers", "ciphers", marks=pytest.mark.controls("cis-deb12:5.1.6", "devsec:sshd-01"), id="ciphers"
        ),
        pytest.param("macs", "macs", marks=pytest.mark.controls("cis-deb12:5.1.15", "devsec:sshd-03"), id="macs"),
    ],
)
def test_sshd_no_weak_algorithms(sshd, option, kind):
    weak = words(sshd[option]) & WEAK_ALGORITHMS[kind]
    assert not weak, f"sshd -T: {option} offers weak {sorted(weak)}"


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("cis-deb12:5.1.5", "devsec:sshd-46", "gs:SYS.1.3.A14")
def test_sshd_banner(host, sshd):
    banner = sshd.get("banner", "none")
    assert banner != "none", "sshd -T: no Banner"
    assert host.file(banner).is_file and host.file(banner).size > 0


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("gs:SYS.1.3.A8", "wiba:Serversysteme", "devsec:sshd-27")
def test_ssh_password_login_refused(target):
    """Real client behaviour: the server offers no password or keyboard-interactive login."""
    if target.reachable is False:
        pytest.fail(target.error, pytrace=False)
    cfg = context()["ssh_config"]
    p = subprocess.run(
        [
            "ssh",
            "-F",
            cfg,
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=0",
            "-o",
            "LogLevel=INFO",
            target.name,
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 255, "a login without a key succeeded"
    denied = [ln for ln in p.stderr.splitlines() if "Permission denied" in ln]
    assert denied, f"no authentication refusal from the server: {p.stderr.strip()}"
    methods = denied[-1].split("(", 1)[-1].rstrip(").")
    assert "password" not in methods.split(",") and "keyboard-interactive" not in methods.split(","), denied[-1]


@pytest.mark.feature("base/sshd")
@pytest.mark.controls("gs:OPS.1.1.2.A6", "cis-deb12:5.1.20", "devsec:sshd-06")
def test_ssh_root_login_refused(target):
    """Real client behaviour: root is refused, with the key the automation account logs in with."""
    if target.reachable is False:
        pytest.fail(target.error, pytrace=False)
    cfg = context()["ssh_config"]
    opts = ["-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=INFO", "-o", "User=root"]
    p = subprocess.run(
        ["ssh", "-F", cfg, *opts, target.name, "true"],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 255, "a root login succeeded"
    assert "Permission denied" in p.stderr, f"no authentication refusal from the server: {p.stderr.strip()}"


# --- named admins ---------------------------------------------------------------------------


def _admins():
    return estate().standard.admins


@pytest.mark.feature("base/admins")
@pytest.mark.controls("gs:OPS.1.1.2.A5", "gs:ORP.4.A1", "wiba:IT-Administration")
def test_named_admins_exist(host):
    for a in _admins():
        u = host.user(a.name)
        assert u.exists, f"admin {a.name} missing"
        assert u.uid == a.uid, f"admin {a.name} has uid {u.uid}; expected {a.uid}"
        assert "basisit-admins" in u.groups


@pytest.mark.feature("base/admins")
@pytest.mark.controls(
    "gs:OPS.1.1.2.A5", "gs:ORP.4.A2", "wiba:IT-Administration", "wiba:Rollen / Berechtigungen / Authentisierung"
)
def test_admin_group_only_named_admins(host):
    members = host.check_output("getent group basisit-admins").split(":")[3]
    assert words(members) <= {a.name for a in _admins()}, f"basisit-admins has members outside the standard: {members}"


@pytest.mark.feature("base/admins")
@pytest.mark.controls("gs:ORP.4.A2", "gs:OPS.1.1.2.A5", "wiba:Rollen / Berechtigungen / Authentisierung")
def test_no_local_account_of_an_unlisted_person(host):
    """An admin removed from the standard has no account, home or key left (base removes them).

    Every local account in the people's uid range (the standard's admin uids, 1000-59999) is a
    named admin of the standard; service accounts lie below it.
    """
    lo, hi = role_default("base", "base_admins_uid_range")
    people = {
        f[0]
        for f in (ln.split(":") for ln in host.check_output("cat /etc/passwd").splitlines())
        if lo <= int(f[2]) <= hi
    }
    unlisted = people - {a.name for a in _admins()} - {AUTOMATION_USER}
    assert not unlisted, f"local accounts of people the standard does not list: {sorted(unlisted)}"


def _admin_sudo():
    """The standard's rule for the admins' sudo (access.admin_sudo): nopasswd only with a reason."""
    return estate().standard.access.admin_sudo


def _admin_password(name: str) -> str:
    """An admin's local password as base stores it on the control host (state/secrets/_admins/<name>)."""
    from basisit import secrets, sitefacts

    path = sitefacts.state_dir(None) / "secrets" / ADMINS_STORE / name
    try:
        return secrets.value(path)
    except FileNotFoundError:
        pytest.fail(f"admin {name}: no password {path} on this control host; converge base first", pytrace=False)
    except secrets.SecretError as e:
        pytest.fail(f"admin {name}: {e}", pytrace=False)


@pytest.mark.feature("base/admins")
@pytest.mark.controls("cis-deb12:5.2.4", "gs:SYS.1.1.A2", "gs:ORP.4.A8", "wiba:IT-Administration")
def test_admin_passwords_are_the_vaulted_ones(host):
    """Sudo re-authenticates, so each admin has a usable password: the shadow field is the SHA-512
    crypt hash of the admin's password vaulted on the control host (not locked `!`, not `*`, not
    empty). Compared here, on the control host: the password never travels. Where the standard
    lets admins' sudo skip the password (with a reason), their password is locked instead."""
    nopasswd = _admin_sudo().nopasswd
    bad = []
    for a in _admins():
        out = host.run("getent shadow %s", a.name)
        field = out.stdout.split(":")[1] if out.rc == 0 and out.stdout.count(":") >= 1 else None
        if field is None:
            bad.append(f"{a.name}: no shadow entry")
        elif nopasswd:
            if not field.startswith(("!", "*")):
                bad.append(f"{a.name}: a usable password, though the standard's admins sudo without one (keys only)")
        elif field == "" or field.startswith(("!", "*")):
            state = "empty" if field == "" else ("locked (!)" if field.startswith("!") else f"unusable ({field[:1]})")
            bad.append(f"{a.name}: password {state}; sudo cannot re-authenticate the admin")
        elif not pwhash.matches(_admin_password(a.name), field):
            kind = field.split("$")[1] if field.startswith("$") else "no crypt hash"
            bad.append(f"{a.name}: the password hash (${kind}$...) is not the one of the vaulted password")
    assert not bad, "; ".join(bad)


@pytest.mark.feature("base/admins")
@pytest.mark.controls("gs:SYS.1.3.A2", "cis-deb12:5.4.2.1")
def test_root_only_uid_zero(host):
    uid0 = [ln.split(":")[0] for ln in host.check_output("getent passwd").splitlines() if ln.split(":")[2] == "0"]
    assert uid0 == ["root"]


@pytest.mark.feature("base/admins")
@pytest.mark.parametrize(
    ("database", "column"),
    [
        pytest.param(
            "passwd", 2, marks=pytest.mark.controls("gs:SYS.1.3.A2", "cis-deb12:7.2.5", "devsec:os-07"), id="uid"
        ),
        pytest.param(
            "group", 2, marks=pytest.mark.controls("gs:SYS.1.3.A2", "cis-deb12:7.2.6", "devsec:os-07"), id="gid"
        ),
    ],
)
def test_unique_ids(host, database, column):
    ids = [ln.split(":")[column] for ln in host.check_output(f"cat /etc/{database}").splitlines() if ln]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate ids in /etc/{database}: {dupes}"


@pytest.mark.feature("base/admins")
@pytest.mark.controls("cis-deb12:7.2.2", "devsec:os-03b")
def test_no_empty_passwords(host):
    empty = [ln.split(":")[0] for ln in host.check_output("getent shadow").splitlines() if ln.split(":")[1] == ""]
    assert not empty, f"accounts with an empty password: {empty}"


# --- sudo -----------------------------------------------------------------------------------


SUDOERS_FILES = "cat /etc/sudoers $(find /etc/sudoers.d -maxdepth 1 -type f ! -name '*~' ! -name '*.*' ! -name README)"


@pytest.fixture(scope="module")
def sudoers(host) -> list[str]:
    """The logical lines of every file sudo loads (sudoers and sudoers.d, as sudo selects them)."""
    assert host.run("visudo -c -q").rc == 0, "sudoers does not parse"
    text = host.check_output(SUDOERS_FILES).replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _global_defaults(lines: list[str]) -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    for ln in lines:
        if not ln.startswith("Defaults") or ln[len("Defaults") : len("Defaults") + 1] not in (" ", "\t"):
            continue
        for opt in ln[len("Defaults") :].split(","):
            opt = opt.strip()
            if "=" in opt:
                k, v = opt.split("=", 1)
                out[k.strip().rstrip("+-")] = v.strip().strip('"')
            elif opt:
                out[opt.lstrip("!")] = not opt.startswith("!")
    return out


@pytest.mark.feature("base/sudo")
@pytest.mark.controls("cis-deb12:5.2.2", "gs:OPS.1.1.2.A5")
def test_sudo_use_pty(sudoers):
    assert _global_defaults(sudoers).get("use_pty") is True


@pytest.mark.feature("base/sudo")
@pytest.mark.controls("cis-deb12:5.2.3", "gs:OPS.1.1.2.A5", "wiba:IT-Administration")
def test_sudo_logfile(host, sudoers):
    logfile = _global_defaults(sudoers).get("logfile")
    assert isinstance(logfile, str) and logfile.startswith("/"), "sudoers sets no logfile"
    d = host.file(logfile.rsplit("/", 1)[0])
    assert d.is_directory and d.user == "root"


@pytest.mark.feature("base/sudo")
@pytest.mark.controls("gs:OPS.1.1.2.A5", "gs:ORP.4.A2", "wiba:IT-Administration")
def test_sudo_only_named_admins(host, sudoers):
    """Whoever a sudo rule names (users, members of groups) is root, a named admin or the automation account."""
    named = {a.name for a in _admins()} | {"root", AUTOMATION_USER}
    grantees: set[str] = set()
    for ln in sudoers:
        first = ln.split()[0]
        if first.startswith(
            ("Defaults", "User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "@include", "#include")
        ):
            continue
        for who in first.split(","):
            if who.startswith("%"):
                g = host.run("getent group %s", who[1:])
                members = g.stdout.strip().split(":")[3] if g.rc == 0 else ""
                grantees |= words(members)
            else:
                grantees.add(who)
    assert grantees <= named, f"sudo rules reach {sorted(grantees - named)}"


@pytest.mark.feature("base/sudo")
@pytest.mark.controls("gs:OPS.1.1.2.A16", "gs:ORP.4.A2", "wiba:IT-Administration")
def test_sudo_only_through_the_admin_group(host):
    """No bootstrap rule (cloud-init's NOPASSWD:ALL), no hand-made rule, nobody in Debian's sudo
    group: sudo is the rules of /etc/sudoers.d/basisit (admin group, automation account), and base
    owns the directory (any other file there, README included, is one sudo may read)."""
    extra = host.check_output("find /etc/sudoers.d -mindepth 1 -maxdepth 1 ! -name basisit -printf '%f\\n'")
    assert not extra.strip(), f"files in /etc/sudoers.d besides basisit: {extra.split()}"
    members = host.check_output("getent group sudo").split(":")[3]
    assert not words(members), f"members of Debian's sudo group: {members}"


# Every file sudo loads: sudoers and what its `@includedir /etc/sudoers.d` reads (not names with
# a dot or ending in `~`; README is read).
SUDO_LOADED = "find /etc/sudoers /etc/sudoers.d -maxdepth 1 -type f ! -name '*~' ! -name '*.*'"
NOPASSWD_TAG = re.compile(r"(?<![A-Za-z_])NOPASSWD\s*:")
NO_AUTHENTICATE = re.compile(r"!\s*authenticate\b")
RULE_KEYWORDS = ("User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias", "@include", "#include")


def _sudo_lines_by_file(host) -> list[tuple[str, str]]:
    """(file, logical line) of every rule and Defaults line of every file sudo loads."""
    out = []
    for f in sorted(host.check_output(SUDO_LOADED).split()):
        text = host.check_output("cat %s", f).replace("\\\n", " ")
        out += [(f, ln.strip()) for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return out


def _skips_password(line: str) -> str | None:
    """Whom a sudoers line lets run commands without a password (its user list), or None."""
    first = line.split()[0]
    if first.startswith("Defaults"):
        if not NO_AUTHENTICATE.search(line):
            return None
        return first[len("Defaults:") :] if first.startswith("Defaults:") else "ALL"  # @host, >runas, !cmnd: anyone
    if first.startswith(RULE_KEYWORDS) or not NOPASSWD_TAG.search(line):
        return None
    return first


@pytest.mark.feature("base/sudo")
@pytest.mark.controls(
    "cis-deb12:5.2.4", "cis-deb12:5.2.5", "gs:SYS.1.1.A2", "gs:OPS.1.1.2.A5", "wiba:IT-Administration"
)
def test_sudo_nopasswd_only_for_the_automation_account(host):
    """The only sudo rule that skips the password (a NOPASSWD tag, a `!authenticate` default) is
    the automation account's, in every file sudo loads; the admins' group's too only where the
    standard says so with a reason (access.admin_sudo)."""
    allowed = {AUTOMATION_USER} | ({f"%{ADMINS_GROUP}"} if _admin_sudo().nopasswd else set())
    bad = [
        f"{f}: {ln}"
        for f, ln in _sudo_lines_by_file(host)
        if (who := _skips_password(ln)) is not None and not set(who.split(",")) <= allowed
    ]
    assert not bad, f"sudo without a password for others than {sorted(allowed)}: {bad}"


@pytest.mark.feature("base/sudo")
@pytest.mark.controls(
    "cis-deb12:5.2.4", "cis-deb12:5.2.5", "gs:SYS.1.1.A2", "gs:OPS.1.1.2.A5", "wiba:IT-Administration"
)
def test_admins_sudo_asks_for_the_password(host):
    """`sudo -l -U <admin>` (sudo's own view, whatever file or source grants it): every named admin
    may use sudo, and no rule or default lets them skip the password."""
    sudo = _admin_sudo()
    if sudo.nopasswd:
        not_applicable(f"the standard lets admins' sudo skip the password: {sudo.reason}")
    bad = []
    for a in _admins():
        out = host.run("sudo -l -U %s", a.name)
        listing = out.stdout
        if out.rc != 0 or "may run the following commands" not in listing:
            bad.append(f"{a.name}: may not use sudo ({(listing + out.stderr).strip()[:200]})")
            continue
        defaults, _, rules = listing.partition("may run the following commands")
        skips = [ln.strip() for ln in rules.splitlines() if NOPASSWD_TAG.search(ln)]
        if NO_AUTHENTICATE.search(defaults):
            skips.append("Defaults !authenticate")
        if skips:
            bad.append(f"{a.name}: sudo -l -U {a.name}: {skips}")
    assert not bad, "; ".join(bad)


@pytest.mark.feature("base/sudo")
@pytest.mark.controls("cis-deb12:5.2.6", "gs:OPS.1.1.2.A5")
def test_sudo_timestamp_timeout(sudoers):
    """An admin's sudo authentication lasts at most 15 minutes (timestamp_timeout set, not -1)."""
    value = _global_defaults(sudoers).get("timestamp_timeout")
    assert isinstance(value, str), "sudoers sets no timestamp_timeout (sudo's default applies)"
    try:
        minutes = float(value)
    except ValueError:
        pytest.fail(f"timestamp_timeout={value}: not a number of minutes", pytrace=False)
    assert 0 <= minutes <= 15, f"timestamp_timeout={value}; expected 0 to 15 minutes"


# --- automatic security updates -------------------------------------------------------------


@pytest.fixture(scope="module")
def apt_config(host) -> str:
    return host.check_output("apt-config dump")


@pytest.mark.feature("base/updates")
@pytest.mark.controls("gs:OPS.1.1.3.A3", "gs:OPS.1.1.3.A15", "gs:SYS.2.1.A3", "wiba:IT-Administration")
def test_unattended_upgrades_enabled(host, apt_config):
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Unattended-Upgrade "1";' in apt_config
    assert 'APT::Periodic::Update-Package-Lists "1";' in apt_config


@pytest.mark.feature("base/updates")
@pytest.mark.controls("gs:OPS.1.1.3.A3", "gs:OPS.1.1.3.A15")
def test_unattended_upgrades_security_origin(apt_config):
    origins = [
        ln
        for ln in apt_config.splitlines()
        if ln.startswith(("Unattended-Upgrade::Origins-Pattern::", "Unattended-Upgrade::Allowed-Origins::"))
    ]
    assert any("Debian-Security" in o or "security" in o for o in origins), origins


@pytest.mark.feature("base/updates")
@pytest.mark.controls("gs:OPS.1.1.3.A3")
@pytest.mark.parametrize("timer", ["apt-daily.timer", "apt-daily-upgrade.timer"])
def test_apt_timers_enabled(host, timer):
    assert host.service(timer).is_enabled


@pytest.mark.feature("base/updates")
@pytest.mark.controls("gs:OPS.1.1.3.A10")
def test_apt_no_unauthenticated(apt_config):
    risky = ("AllowUnauthenticated", "AllowInsecureRepositories", "AllowDowngradeToInsecureRepositories")
    bad = [ln for ln in apt_config.splitlines() if any(r in ln for r in risky) and ('"1"' in ln or '"true"' in ln)]
    assert not bad, bad


# --- time sync ------------------------------------------------------------------------------


@pytest.mark.feature("base/time")
@pytest.mark.controls("gs:OPS.1.1.5.A4", "cis-deb12:2.3.1.1", "wiba:Vorbereitung für Sicherheitsvorfälle")
def test_chrony_running(host):
    assert host.service("chrony").is_running
    assert not host.service("systemd-timesyncd").is_running, "two time-sync daemons"


@pytest.mark.feature("base/time")
@pytest.mark.controls("gs:OPS.1.1.5.A4", "gs:NET.3.2.A22")
def test_chrony_sources_from_standard(host, target):
    """Gateways sync from the standard's NTP servers, every other host from its zone's gateway."""
    if ROUTERS & set(target.roles):
        # Upstream names may not resolve offline: compare the configured servers (chronyc lists resolved ones only).
        conf = host.check_output("cat /etc/chrony/chrony.conf")
        servers = {ln.split()[1] for ln in conf.splitlines() if ln.startswith(("server ", "pool "))}
        assert servers == set(estate().standard.services.ntp.servers), f"chrony servers {sorted(servers)}"
        return
    sources = host.check_output("chronyc -n -c sources").splitlines()
    addrs = {ln.split(",")[2] for ln in sources if ln.count(",") >= 2}
    mh = next(h for h in estate().site(target.kommune).hosts if h.name == target.name)
    gw = estate().site(target.kommune).zones[mh.primary_zone].gateway
    assert addrs == {str(gw)}, f"chrony sources {sorted(addrs)}; expected the zone gateway {gw}"


# --- journal and forwarding -----------------------------------------------------------------


@pytest.mark.feature("base/journal")
@pytest.mark.controls("gs:OPS.1.1.5.A3", "gs:SYS.1.1.A10")
def test_journal_persistent(host):
    assert host.file("/var/log/journal").is_directory
    assert host.service("systemd-journald").is_running


@pytest.mark.feature("base/journal")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:DER.1.A5")
def test_log_forwarding_configured(host, target):
    """rsyslog runs, its configuration parses, and it forwards to the log host where the matrix allows it."""
    from basisit import policy

    assert host.service("rsyslog").is_running
    assert host.run("rsyslogd -N1").rc == 0
    model_host = next(h for h in estate().site(target.kommune).hosts if h.name == target.name)
    flows = [f for f in policy.outbound(estate(), model_host) if f.rule in LOG_RULES]
    conf = host.check_output("cat /etc/rsyslog.conf; cat /etc/rsyslog.d/*.conf 2>/dev/null; true")
    if flows:
        assert f'target="{flows[0].dst.network_address}"' in conf, "rsyslog does not forward to the log host"
    else:
        assert "omfwd" not in conf, "forwards although the allow matrix gives no path to the log host"


@pytest.mark.feature("log_host")
@pytest.mark.controls("gs:OPS.1.1.5.A6", "gs:DER.1.A5", "wiba:Vorbereitung für Sicherheitsvorfälle")
def test_logs_forwarded_to_log_host(host, target):
    """rsyslog holds a TCP connection to the zentral log host where the allow matrix permits it."""
    from basisit import policy

    model_host = next(h for h in estate().site(target.kommune).hosts if h.name == target.name)
    flows = [f for f in policy.outbound(estate(), model_host) if f.rule in LOG_RULES]
    if not flows:
        not_applicable("the allow matrix gives this host no path to the log host")
    assert host.service("rsyslog").is_running
    log_addr = str(flows[0].dst.network_address)
    est = host.check_output("ss -Htn state established dst %s", log_addr)
    assert f"{log_addr}:{flows[0].port}" in est, f"no established connection to {log_addr}:{flows[0].port}"


# --- sysctl ---------------------------------------------------------------------------------

# key, value, controls[, an extra role feature the value needs: gated until the role sets it]
SYSCTLS = [
    ("kernel.randomize_va_space", "2", ("gs:SYS.1.3.A4", "cis-deb12:1.5.1", "devsec:sysctl-31")),
    ("net.ipv4.conf.all.send_redirects", "0", ("cis-deb12:3.3.2",)),
    ("net.ipv4.icmp_ignore_bogus_error_responses", "1", ("cis-deb12:3.3.3",)),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1", ("cis-deb12:3.3.4",)),
    ("net.ipv4.conf.all.accept_redirects", "0", ("cis-deb12:3.3.5",)),
    ("net.ipv4.conf.all.secure_redirects", "0", ("cis-deb12:3.3.6",), "base/sysctl-secure-redirects"),
    ("net.ipv4.conf.all.rp_filter", "1", ("cis-deb12:3.3.7",)),
    ("net.ipv4.conf.all.accept_source_route", "0", ("cis-deb12:3.3.8",)),
    ("net.ipv4.conf.all.log_martians", "1", ("cis-deb12:3.3.9",)),
    ("net.ipv4.tcp_syncookies", "1", ("cis-deb12:3.3.10",)),
]


@pytest.mark.feature("base/sysctl")
@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(k, v, marks=[pytest.mark.controls(*c), *(pytest.mark.feature(f) for f in more)], id=k)
        for k, v, c, *more in SYSCTLS
    ],
)
def test_sysctl(host, target, key, value):
    want = {value}
    if key.endswith("rp_filter") and ROUTERS & set(target.roles):
        want.add("2")  # loose mode on routers with asymmetric paths (still CIS 3.3.7: not 0)
    got = host.check_output("sysctl -n %s", key)
    assert got in want, f"sysctl {key} = {got}; expected {' or '.join(sorted(want))}"


@pytest.mark.feature("base/sysctl")
@pytest.mark.controls("cis-deb12:3.3.1", "gs:NET.3.2.A8")
def test_ip_forward_only_on_routers(host, target):
    if ROUTERS & set(target.roles):
        not_applicable("routing is this host's job (CIS 3.3.1 conflicts with a gateway)")
    assert host.check_output("sysctl -n net.ipv4.ip_forward") == "0"


# --- host firewall --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ruleset(host) -> list[dict]:
    return json.loads(host.check_output("nft -j list ruleset"))["nftables"]


def _input_chains(ruleset: list[dict]) -> list[dict]:
    return [e["chain"] for e in ruleset if "chain" in e and e["chain"].get("hook") == "input"]


@pytest.mark.feature("base/firewall")
@pytest.mark.controls("gs:SYS.1.1.A19", "gs:NET.3.2.A2", "cis-deb12:4.1.1", "wiba:Sicherheitsmechanismen")
def test_firewall_input_default_deny(ruleset):
    chains = _input_chains(ruleset)
    assert chains, "nftables has no input base chain"
    assert all(c.get("policy") == "drop" for c in chains), [(c["name"], c.get("policy")) for c in chains]


@pytest.mark.feature("base/firewall")
@pytest.mark.controls("gs:NET.3.2.A2", "gs:SYS.1.1.A19", "cis-deb12:3.3.1")
def test_firewall_forward_default_deny(host, ruleset):
    """Every host drops forwarded packets by default, and base's own ruleset says so.

    Base loads /etc/nftables.conf (with this chain) before it enables forwarding on a router, and
    the boot-time load of the same file runs before any role's drop-in: a router never forwards
    without a firewall. Its allowed transit flows are rules of this same chain.
    """
    chains = [e["chain"] for e in ruleset if "chain" in e and e["chain"].get("hook") == "forward"]
    assert chains, "nftables has no forward base chain"
    assert all(c.get("policy") == "drop" for c in chains), [(c["name"], c.get("policy")) for c in chains]
    conf = host.file("/etc/nftables.conf").content_string
    assert re.search(r"chain forward \{\s*type filter hook forward priority filter; policy drop;", conf), (
        "/etc/nftables.conf (base) has no forward chain with policy drop"
    )


@pytest.mark.feature("base/firewall")
@pytest.mark.controls("gs:SYS.1.1.A19", "gs:NET.3.2.A3")
def test_firewall_stateful(ruleset):
    text = json.dumps([e["rule"] for e in ruleset if "rule" in e])
    assert '"ct"' in text and "established" in text, "no conntrack (established) rule"


@pytest.mark.feature("base/firewall")
@pytest.mark.controls("gs:SYS.1.1.A19", "gs:NET.3.2.A4")
def test_firewall_service_enabled(host):
    assert host.service("nftables").is_enabled


@pytest.mark.feature("base/firewall")
@pytest.mark.controls("gs:SYS.1.1.A6", "gs:SYS.1.1.A5", "gs:NET.3.2.A4")
def test_only_allowed_tcp_ports_listen_publicly(host, target):
    """Every TCP port listening beyond loopback is admitted by the allow matrix, is SSH, or is a service of the host's role."""
    from basisit import policy

    model_host = next(h for h in estate().site(target.kommune).hosts if h.name == target.name)
    allowed = {f.port for f in policy.inbound(estate(), model_host) if f.proto == "tcp"} | {22}
    for role in target.roles:
        allowed |= ROLE_TCP_SERVICES.get(role, set())
    listening = set()
    for ln in host.check_output("ss -Htln").splitlines():
        local = ln.split()[3]
        addr, _, port = local.rpartition(":")
        if addr.strip("[]").startswith(("127.", "::1")):
            continue
        listening.add(int(port))
    assert listening <= allowed, f"listening on {sorted(listening - allowed)}, not in the allow matrix"


# --- banner and audit -----------------------------------------------------------------------


@pytest.mark.feature("base/banner")
@pytest.mark.controls("gs:SYS.1.3.A14")
@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_banner_without_os_details(host, path):
    f = host.file(path)
    assert f.is_file and f.size > 0
    assert not any(esc in f.content_string for esc in ("\\v", "\\r", "\\m", "\\s", "Debian")), f"{path} reveals the OS"


@pytest.mark.feature("base/audit")
@pytest.mark.controls("gs:SYS.1.1.A10", "gs:OPS.1.1.5.A3", "devsec:package-08")
def test_audit_rules_deployed(host):
    """The rules are on disk and complete (also in containers, where auditd cannot run)."""
    assert host.package("auditd").is_installed
    rules = host.check_output("cat /etc/audit/rules.d/*.rules 2>/dev/null; true")
    for watched in ("/etc/sudoers", "/etc/passwd", "/etc/group", "/etc/shadow"):
        assert f"-w {watched} " in rules, f"no audit rule watches {watched}"


@pytest.mark.feature("base/audit")
@pytest.mark.controls("gs:SYS.1.1.A10", "devsec:package-08")
def test_audit_rules_loaded(host):
    """Where the kernel supports audit: auditd runs and the kernel has the rules."""
    if host.run("systemd-detect-virt -c -q").rc == 0:
        not_applicable("containers have no kernel audit support; the rules are verified on disk")
    assert host.service("auditd").is_running
    assert "/etc/sudoers" in host.check_output("auditctl -l")
