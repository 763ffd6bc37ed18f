"""backup_client role: restic to the zentral repository; freshness against the RPO, restore canary.

Gated until roles/backup_client lands. The paths below are the interface the backup role is
expected to provide (environment file with RESTIC_REPOSITORY and RESTIC_PASSWORD_FILE, a
`basisit-backup` service and timer); adjust them to the role when it lands.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from basisit.verify.suite import estate

pytestmark = pytest.mark.role("backup_client")

ENV_FILE = "/etc/basisit/backup.env"
RESTIC = f"set -a; . {ENV_FILE}; set +a; restic"
CANARY = "/var/lib/basisit/backup-canary"


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A5", "wiba:Backup")
def test_backup_timer_enabled(host):
    assert host.service("basisit-backup.timer").is_enabled


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A5", "gs:CON.3.A6", "wiba:Backup")
def test_newest_snapshot_within_rpo(host, target):
    rpo = estate().standard.services.backup.rpo_hours
    snaps = json.loads(
        host.check_output(f"{RESTIC} snapshots --json --latest 1 --host %s", target.name.split("-", 1)[1])
    )
    assert snaps, "no snapshot in the repository"
    newest = max(dt.datetime.fromisoformat(s["time"]) for s in snaps)
    age = dt.datetime.now(dt.UTC) - newest
    assert age <= dt.timedelta(hours=rpo), f"newest snapshot {newest.isoformat()} is {age} old; RPO {rpo} h"


@pytest.mark.feature("backup_client")
@pytest.mark.controls("gs:CON.3.A15", "wiba:Backup")
def test_restore_canary(host):
    """Restore the canary file from the newest snapshot into a scratch dir and compare checksums."""
    want = host.check_output("sha256sum %s", CANARY).split()[0]
    out = host.check_output(
        f'd=$(mktemp -d) && {RESTIC} restore latest --include %s --target "$d" >/dev/null && '
        f'sha256sum "$d"%s; rm -rf "$d"',
        CANARY,
        CANARY,
    )
    assert out.split()[0] == want, "restored canary differs from the original"


@pytest.mark.feature("backup_server")
@pytest.mark.controls("gs:CON.3.A14", "gs:CON.3.A12", "wiba:Backup")
def test_repository_served_append_only(target):
    """The zentral repository server (rclone serve restic) runs with --append-only: clients cannot delete."""
    from basisit.verify.suite import all_targets, connect, not_applicable

    servers = [t for t in all_targets(include_helpers=True) if "backup_server" in t.roles]
    if not servers:
        not_applicable("zentral's backup server is not realised in this run")
    out = connect(servers[0].name).check_output("pgrep -a -f 'rclone serve restic' || true")
    assert "rclone serve restic" in out, "no restic repository server running"
    assert all("--append-only" in ln for ln in out.splitlines() if "rclone" in ln), out
