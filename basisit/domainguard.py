"""The provisioning guard: a converge never provisions a second domain for a Kommune.

A fresh domain controller host (no `sam.ldb`) of a Kommune whose domain already exists must be
rebuilt from zentral's backup (`basisit restore`), never provisioned anew: a new domain has a new
SID, so every member's trust and every domain backup's meaning would be lost.

The control host knows the domain exists from its record, `<state>/domains/<slug>.json`, written
by the primary DC's converge (roles/ad_dc tasks/provision.yml) once its database exists:

    {"kommune": "nalbach", "realm": "NALBACH.EGO-SAAR.DE", "domain_sid": "S-1-5-21-…", "dc": "nalbach-dc1"}

It is not written again while the DC's domain SID is the recorded one; another SID on the DC fails
the converge (a second domain was provisioned or restored from another Kommune's backup). The
record stays when a DC is lost (`basisit lab destroy --host`) and when a cloud stack is torn down;
removing it is the operator's explicit "this domain and its backups are gone for good: provision a
new one". `basisit lab down` of a Kommune removes it (`forget`): the lab site is gone with every
member of its domain, so there is no trust left to keep.

Read by the lookup `basisit_domain_guard` (plugins/lookup) in site.yml's first play and in
provision.yml; the decisions are the pure functions below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RECORD_DIR = "domains"
FIELDS = ("kommune", "realm", "domain_sid", "dc")
SID = re.compile(r"^S-1-5-21-\d+-\d+-\d+$")


class RecordError(Exception):
    """The domain record is unreadable or malformed: one line naming the file and the field."""


def record_path(state: str | Path, slug: str) -> Path:
    return Path(state) / RECORD_DIR / f"{slug}.json"


def record_doc(slug: str, realm: str, domain_sid: str, dc: str) -> dict[str, str]:
    """The record of a Kommune's domain (what the converge writes; no timestamp: idempotent)."""
    if not SID.match(domain_sid):
        raise RecordError(f"{slug}: {domain_sid!r} is not a domain SID (S-1-5-21-a-b-c)")
    return {"kommune": slug, "realm": realm, "domain_sid": domain_sid, "dc": dc}


def domain_sid(administrator_sid: str) -> str:
    """The domain SID from the Administrator's objectSid (`S-1-5-21-a-b-c-500`)."""
    m = re.search(r"^objectSid: (S-1-5-21-\d+-\d+-\d+)-500\s*$", administrator_sid, re.M)
    if not m:
        raise RecordError(f"no Administrator objectSid (S-1-5-21-…-500) in: {administrator_sid.strip()[:200]!r}")
    return m[1]


def read_record(state: str | Path, slug: str) -> dict[str, str] | None:
    """The Kommune's domain record, None when there is none; malformed is an error naming file and field."""
    path = record_path(state, slug)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable domain record ({e})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path}: expected a mapping with {', '.join(FIELDS)}")
    for f in FIELDS:
        if not isinstance(doc.get(f), str) or not doc[f]:
            raise RecordError(f"{path}: field {f!r} missing or not a string")
    if doc["kommune"] != slug:
        raise RecordError(f"{path}: field 'kommune' is {doc['kommune']!r}, not {slug!r}")
    if not SID.match(doc["domain_sid"]):
        raise RecordError(f"{path}: field 'domain_sid' {doc['domain_sid']!r} is not a domain SID")
    return doc


def refusal(slug: str, host: str, short: str, sam_exists: bool, record: dict | None, path: str | Path) -> str:
    """Why a converge must not touch this DC host ('' when it may): a host without a domain
    database of a Kommune whose domain is recorded would provision a new domain."""
    if sam_exists or record is None:
        return ""
    return (
        f"{slug}: {host} holds no domain database, but the domain {record['realm']} ({record['domain_sid']}) "
        f"of {slug} exists (recorded in {path}): a converge would provision a NEW domain (a new SID: every "
        f"member's trust and every backup's meaning lost); the converge refuses it. Rebuild the DC from "
        f"zentral's backup: basisit restore --kommune {slug} --host {short}. Only if the domain and its "
        f"backups are gone for good, remove {path} and converge again to provision a new domain."
    )


def mismatch(slug: str, host: str, live_sid: str, record: dict | None, path: str | Path) -> str:
    """Why the DC's domain must not be recorded ('' when it may): its SID is not the recorded one."""
    if record is None or record["domain_sid"] == live_sid:
        return ""
    return (
        f"{slug}: the domain database on {host} has SID {live_sid}, but {slug}'s domain is "
        f"{record['domain_sid']} (recorded in {path}): this is another domain (provisioned anew or restored "
        f"from another backup); members and backups belong to the recorded one. Restore the DC "
        f"(basisit restore), or, if the recorded domain is gone for good, remove {path}."
    )


def forget(state: str | Path, slug: str) -> bool:
    """Remove the Kommune's domain record (its lab site is gone); True when there was one."""
    path = record_path(state, slug)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
