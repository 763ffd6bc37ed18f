"""Backup: restic to the zentral repository; freshness against the RPO, restore canary; keys
apart from storage (the repository host keeps ciphertext and bcrypt hashes, no repository
password; a Kommune's credential reaches its own repository only and cannot delete; retention
runs from zentral's management host).

The roles' interface: /etc/basisit-backup/restic.env (RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE),
`basisit-backup.service`/`.timer`, snapshots tagged with the inventory host name (backup_client);
the htpasswd files in backup_server_config_dir, the listeners' command lines (backup_server);
`basisit-restic-retention.service`/`.timer` and its stamp (backup_retention).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re

import pytest

from basisit.verify.suite import estate, not_applicable, role_default, run_with_secret, secret

pytestmark = pytest.mark.role("backup_client")

ENV_FILE = "/etc/basisit-backup/restic.env"
RESTIC = f"set -a; . {ENV_FILE}; set +a; restic"
CANARY = "/etc/hostname"  # in every snapshot (/etc is backed up) and stable between runs


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A5", "wiba:Backup")
def test_backup_timer_enabled(host):
    assert host.service("basisit-backup.timer").is_enabled


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A5", "gs:CON.3.A6", "wiba:Backup")
def test_newest_snapshot_within_rpo(host, target):
    rpo = estate().standard.services.backup.rpo_hours
    snaps = json.loads(
        host.check_output(f"{RESTIC} snapshots --json --latest 1 --host %s", target.name)  # the job's --host
    )
    assert snaps, "no snapshot in the repository"
    newest = max(dt.datetime.fromisoformat(s["time"]) for s in snaps)
    age = dt.datetime.now(dt.UTC) - newest
    assert age <= dt.timedelta(hours=rpo), f"newest snapshot {newest.isoformat()} is {age} old; RPO {rpo} h"


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A15", "wiba:Backup")
def test_restore_canary(host, target):
    """Restore a canary file from this host's newest snapshot into a scratch dir and compare checksums.

    A Kommune's hosts share one repository: `latest` is taken among this host's snapshots (the
    job's --host), never another host's.
    """
    want = host.check_output("sha256sum %s", CANARY).split()[0]
    out = host.run(
        f'd=$(mktemp -d) && trap \'rm -rf "$d"\' EXIT && {RESTIC} restore latest --host %s --include %s --target "$d" '
        f'>/dev/null && sha256sum "$d"%s',
        target.name,
        CANARY,
        CANARY,
    )
    assert out.rc == 0, f"restore from the newest snapshot failed: {out.stderr.strip()[-300:]}"
    assert out.stdout.split()[0] == want, "restored canary differs from the original"


# The tarball's member names, read as samba-tool reads it (Python's tarfile: no bzip2 program on the DC).
_TAR_NAMES = "import sys, tarfile; print(chr(10).join(tarfile.open(sys.argv[1]).getnames()))"


@pytest.mark.role("ad_dc")
@pytest.mark.feature("backup_client/samba")
@pytest.mark.controls("gs:APP.2.2.A12", "gs:CON.3.A15", "wiba:Backup")
def test_newest_snapshot_holds_a_restorable_domain_backup(host, target):
    """A DC's newest snapshot holds the Samba domain backup `basisit restore` rebuilds the DC from
    (the backup job's offline `samba-tool domain backup`): restored from the repository into a
    scratch dir, the tarball holds the domain database (private/sam.ldb) and the sysvol."""
    samba_dir = role_default("backup_client", "backup_client_samba_dir")
    out = host.run(
        f"d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && {RESTIC} restore latest --host %s --include %s "
        f'--target "$d" >/dev/null && f=$(ls "$d"%s/samba-backup-*.tar.bz2 2>/dev/null | tail -1) '
        f'&& [ -n "$f" ] && basename "$f" && python3 -c %s "$f" | grep -xE "private/sam.ldb|sysvol.tar.gz"',
        target.name,
        samba_dir,
        samba_dir,
        _TAR_NAMES,
    )
    assert out.rc == 0, (
        f"the newest snapshot of {target.name} holds no Samba domain backup under {samba_dir} "
        f"(or it cannot be restored): {out.stderr.strip()[-300:]}"
    )
    lines = out.stdout.split()
    assert {"private/sam.ldb", "sysvol.tar.gz"} <= set(lines[1:]), f"{lines[0]} lacks the database or the sysvol"


def _remote_python(code: str) -> str:
    """A python3 command line running `code` (no quoting issues; the code holds no secret)."""
    encoded = base64.b64encode(code.encode()).decode()
    return f"python3 -c \"exec(__import__('base64').b64decode('{encoded}'))\""


# From a Kommune host with its own credential (read there from restic.env, never sent): the status
# of listing another Kommune's repository, of listing its own, and of deleting one of its own
# snapshots. A snapshot name that does not exist: append-only refuses every DELETE (403) before it
# looks, a server that allows deletes answers 404, and no snapshot is ever lost to this check.
_ACCESS = """
import json, re, urllib.error, urllib.request, sys
env = dict(l.split("=", 1) for l in open("/etc/basisit-backup/restic.env").read().splitlines() if "=" in l and not l.startswith("#"))
m = re.match(r"rest:(https?)://([^:@/]+):([^@/]+)@([^/]+)/([^/]+)/?$", env["RESTIC_REPOSITORY"])
scheme, user, cred, hostport, repo = m.groups()
def status(method, path):
    req = urllib.request.Request(f"{scheme}://{hostport}{path}", method=method)
    req.add_header("Accept", "application/vnd.x.restic.rest.v2")
    req.add_header("Authorization", "Basic " + __import__("base64").b64encode(f"{user}:{cred}".encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=20).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return "error: " + type(e).__name__
other = sys.argv[1]
print(json.dumps({"user": user, "own": status("GET", f"/{repo}/keys/"), "other": status("GET", f"/{other}/keys/"),
                  "other_config": status("GET", f"/{other}/config"),
                  "delete": status("DELETE", f"/{repo}/snapshots/" + "0" * 64)}))
"""


@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A14", "wiba:Backup")
def test_credential_reaches_only_its_own_repository_and_cannot_delete(host, target):
    """With its own REST credential, a Kommune host lists its repository (200), is refused another
    Kommune's (401/403: --private-repos) and cannot delete a snapshot (403: --append-only)."""
    other = next(k for k in sorted(estate().kommunen) if k != target.kommune)
    out = host.run(_remote_python(_ACCESS) + " %s", other)
    assert out.rc == 0, f"access probe failed: {out.stderr.strip()[-300:]}"
    got = json.loads(out.stdout)
    assert got["user"] == target.kommune, f"restic.env's REST user is {got['user']}, not {target.kommune}"
    assert got["own"] == 200, f"its own repository /{target.kommune}/ answers {got['own']}, not 200"
    assert got["other"] in (401, 403) and got["other_config"] in (401, 403), (
        f"{target.kommune}'s credential on /{other}/: listing {got['other']}, config {got['other_config']}"
        " (must be refused with 401/403)"
    )
    assert got["delete"] == 403, f"DELETE of a snapshot in /{target.kommune}/ answers {got['delete']}, not 403"


def _listeners(host) -> dict[str, str]:
    """The restic REST servers (rclone serve restic) on the host: {--addr value: command line}."""
    procs = [ln for ln in host.check_output("pgrep -a -x rclone || true").splitlines() if "serve restic" in ln]
    return {(m.group(1) if (m := re.search(r"--addr[= ](\S+)", ln)) else "?"): ln for ln in procs}


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A14", "gs:ORP.4.A23", "wiba:Backup")
def test_repository_opens_with_the_control_hosts_password_only(host, target):
    """The repository opens with the control host's repository password (restic-repository), this
    client uses that password, and the repository holds no other key: a rotation
    (`basisit secrets rotate --what restic`) has been applied and the old password's key removed.
    The password reaches restic on stdin (--password-file /dev/stdin), never an argument."""
    password = secret(target.kommune, "restic-repository")
    p = run_with_secret(target.name, f"{RESTIC} key list --json --password-file /dev/stdin", password, root=True)
    out = (p.stdout + p.stderr).strip()
    assert password not in out
    pending = f"rotated and not applied yet? converge playbooks/site.yml -l {target.kommune},zentral"
    assert p.returncode == 0, (
        f"the control host's repository password does not open the repository ({pending}): {out[-300:]}"
    )
    keys = json.loads(p.stdout)
    assert len(keys) == 1, f"the repository holds {len(keys)} keys, not only the current password's ({pending})"
    mine = host.run("sha256sum %s", role_default("backup_client", "backup_client_config_dir") + "/repository-password")
    want = hashlib.sha256(password.encode()).hexdigest()
    assert mine.rc == 0 and mine.stdout.split()[0] == want, (
        f"{target.name}'s repository password file is not the control host's password ({pending})"
    )


@pytest.mark.role("backup_server")
@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A14", "gs:CON.3.A12", "wiba:Backup")
def test_repository_served_append_only(host):
    """The Kommunen's listener runs --append-only --private-repos with the Kommunen's htpasswd; the
    only other one is the maintenance listener with the maintenance identity's htpasswd alone."""
    conf = role_default("backup_server", "backup_server_config_dir")
    port = estate().standard.services.backup.repository_port
    maint = role_default("backup_server", "backup_server_maintenance_port")
    found = _listeners(host)
    assert f":{port}" in found, f"no restic repository server (rclone serve restic) on :{port}: {found}"
    kommunen = found.pop(f":{port}").split()
    assert {"--append-only", "--private-repos"} <= set(kommunen), " ".join(kommunen)
    assert kommunen[kommunen.index("--htpasswd") + 1] == f"{conf}/htpasswd", " ".join(kommunen)
    assert set(found) <= {f":{maint}"}, f"other restic servers: {found}"
    for line in found.values():
        assert f"--htpasswd {conf}/htpasswd-maintenance " in line, line


def _htpasswd(host, path: str) -> list[tuple[str, str]]:
    out = host.run("cat %s", path)
    assert out.rc == 0, f"{path}: {out.stderr.strip()}"
    return [tuple(line.split(":", 1)) for line in out.stdout.splitlines() if line.strip()]


BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


@pytest.mark.role("backup_server")
@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A14", "gs:ORP.4.A23", "wiba:Backup")
def test_htpasswd_entries_are_bcrypt(host):
    """Every REST credential is stored as a bcrypt hash ($2b$/$2y$), one user per Kommune with
    backup clients, and the maintenance identity alone in the maintenance listener's file."""
    conf = role_default("backup_server", "backup_server_config_dir")
    e = estate()
    want = sorted({k.slug for k in e.kommunen.values() if k.hosts_with_role("backup_client")})
    entries = _htpasswd(host, f"{conf}/htpasswd")
    maint = _htpasswd(host, f"{conf}/htpasswd-maintenance")
    weak = [
        f"{path}: {user} ({h[:6]}...)"
        for path, es in (("htpasswd", entries), ("htpasswd-maintenance", maint))
        for user, h in es
        if not BCRYPT.match(h)
    ]
    assert not weak, f"entries not bcrypt: {weak}"
    assert sorted(u for u, _ in entries) == want, f"htpasswd users differ from the Kommunen: {[u for u, _ in entries]}"
    assert [u for u, _ in maint] == [role_default("backup_server", "backup_server_maintenance_user")]


# On the repository host: sha256 of every password-like token (the generators' alphabet, 12 and
# more characters) of every small regular file outside the repository data (ciphertext); the
# hashes of the repository passwords come on stdin, and only the paths of files holding one are
# printed. The passwords never leave the control host, not even to the host being checked.
_SCAN = """
import hashlib, os, re, sys
want = set(sys.stdin.read().split())
data_dir = sys.argv[1].rstrip("/") + "/"
skip = (data_dir, "/var/lib/dpkg/", "/var/lib/apt/", "/var/cache/", "/var/log/journal/")
tok = re.compile(rb"[A-Za-z0-9.,_-]{12,}")
unreadable = []
for root in ("/etc", "/root", "/home", "/usr/local", "/opt", "/srv", "/var", "/tmp"):
    # a directory removed while the walk runs (a service's private /tmp) is not unreadable
    for dp, dns, fns in os.walk(root, onerror=lambda e: isinstance(e, PermissionError) and unreadable.append(e.filename)):
        if (dp.rstrip("/") + "/").startswith(skip):
            dns[:] = []
            continue
        for fn in fns:
            p = os.path.join(dp, fn)
            try:
                st = os.lstat(p)
                if not __import__("stat").S_ISREG(st.st_mode) or st.st_size > (1 << 20):
                    continue
                with open(p, "rb") as fh:
                    toks = set(tok.findall(fh.read()))
            except OSError:
                continue
            if any(hashlib.sha256(t).hexdigest() in want for t in toks):
                print(p)
if unreadable:  # a directory the scan could not read is not a directory without passwords
    sys.exit("cannot read: " + " ".join(sorted(set(unreadable))[:20]))
"""


@pytest.mark.role("backup_server")
@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A13", "gs:CON.3.A14", "wiba:Backup")
def test_no_repository_password_on_the_backup_host(host, target):
    """No Kommune's repository password exists on the repository host: its configuration directory
    holds the htpasswd files only, no pruning job reads passwords there, and no file outside the
    repository data holds a repository password of a Kommune the control host knows."""
    from basisit import secrets, sitefacts

    conf = role_default("backup_server", "backup_server_config_dir")
    data = role_default("backup_server", "backup_server_data_dir")
    found = []
    listing = host.run("find %s -mindepth 1 -maxdepth 1 -printf '%%f\\n'", conf).stdout.split()
    found += [f"{conf}/{n}" for n in listing if n not in ("htpasswd", "htpasswd-maintenance")]
    for path in ("/usr/local/sbin/basisit-restic-prune", "/etc/systemd/system/basisit-restic-prune.service"):
        if host.file(path).exists:
            found.append(path)
    store = sitefacts.state_dir(None) / "secrets"
    hashes = []
    for f in sorted(store.glob("*/restic-repository")):
        try:
            hashes.append(hashlib.sha256(secrets.value(f).encode()).hexdigest())
        except secrets.SecretError as e:
            pytest.fail(f"{f}: {e}", pytrace=False)
    assert hashes, f"no repository password in {store}: converge a Kommune's backup clients first"
    scan = run_with_secret(target.name, _remote_python(_SCAN) + f" {data}", "\n".join(hashes), timeout=300, root=True)
    assert scan.returncode == 0, f"password scan failed: {scan.stderr.strip()[-300:]}"
    found += [p for p in scan.stdout.split() if p not in found]
    assert not found, f"repository passwords (or the job that read them) on the repository host: {sorted(set(found))}"


@pytest.mark.role("mgmt_host")
@pytest.mark.feature("backup_retention")
@pytest.mark.controls("gs:CON.3.A5", "gs:CON.3.A6", "wiba:Backup")
def test_retention_ran_from_the_management_host(host):
    """Retention (forget --prune, check) runs from the management host: its timer is active and
    its last run succeeded within a day (the stamp), its last result is success."""
    stamp = role_default("backup_retention", "backup_retention_stamp")
    assert host.service("basisit-restic-retention.timer").is_enabled, "retention timer not enabled"
    assert host.service("basisit-restic-retention.timer").is_running, "retention timer not active"
    result = host.check_output("systemctl show -p Result --value basisit-restic-retention.service")
    assert result == "success", f"last retention run: {result}"
    text = host.run("cat %s", stamp).stdout.strip()
    assert text, f"no successful retention run ({stamp} missing)"
    last = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    hours = estate().standard.services.backup.rpo_hours
    age = dt.datetime.now(dt.UTC) - last
    assert age <= dt.timedelta(hours=hours), f"last successful retention {text} is {age} old (> {hours} h)"


@pytest.mark.role("backup_server")
@pytest.mark.feature("backup_server/retired")
@pytest.mark.controls("gs:CON.3.A14", "gs:CON.3.A12", "wiba:Backup")
def test_retired_kommunen_repositories_kept_read_only(host):
    """A retired Kommune's repository is kept, and no listener can write to it: every file and
    directory is root's, the service user may only read (its htpasswd entry is gone: see
    test_htpasswd_entries_are_bcrypt)."""
    retired = sorted(estate().retired)
    if not retired:
        not_applicable("no Kommune of the inventory is retired")
    data = role_default("backup_server", "backup_server_data_dir")
    user = role_default("backup_server", "backup_server_user")
    for slug in retired:
        repo = f"{data}/{slug}"
        if not host.file(repo).is_directory:
            continue  # it never took a backup: nothing to keep
        writable = host.run(
            "find %s \\( -not -user root -o -perm /0022 -o \\( -type f -perm /0200 \\) \\) -print -quit", repo
        )
        assert writable.rc == 0 and not writable.stdout.strip(), (
            f"{repo}: writable by someone other than root: {writable.stdout.strip() or writable.stderr.strip()}"
        )
        probe = host.run("runuser -u %s -- touch %s/basisit-write-probe", user, repo)
        host.run("rm -f %s/basisit-write-probe", repo)
        assert probe.rc != 0, f"{repo}: {user} can still write to it"
