"""backup_client role: restic to the zentral repository; freshness against the RPO, restore canary.

The role's interface: /etc/basisit-backup/restic.env (RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE),
`basisit-backup.service`/`.timer`, snapshots tagged with the inventory host name.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from basisit.verify.suite import estate

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


@pytest.mark.role("backup_server")
@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A14", "gs:CON.3.A12", "wiba:Backup")
def test_repository_served_append_only(host):
    """The zentral repository server (rclone serve restic) runs with --append-only: clients cannot delete."""
    procs = [ln for ln in host.check_output("pgrep -a -x rclone || true").splitlines() if "serve restic" in ln]
    assert procs, "no restic repository server (rclone serve restic) running"
    assert all("--append-only" in ln for ln in procs), procs
