"""Waivers (`inventory/waivers.yaml`): an approved, dated exception for one control or check.

A waiver names a control id (`gs:SYS.1.3.A8`, `cis-deb12:3.3.1`, ...) or a test id
(`test_base::test_sshd_option`), a scope (Kommune, role and/or host; at least one), a written
justification, who approved it, and an expiry date. A failing check it matches is reported as
*waived*; once the expiry date has passed the waiver no longer applies and is reported as a
failing result of its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from basisit.model import Estate
from basisit.verify import controls

FILENAME = "waivers.yaml"
SOON_DAYS = 30  # a waiver expiring within this many days is flagged on the dashboard


class WaiverError(Exception):
    """The waiver file is unreadable or an entry is invalid; one line per problem."""


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kommune: str | None = Field(None, description="Kommune slug")
    role: str | None = Field(None, description="host role, e.g. gateway")
    host: str | None = Field(None, description="host name, e.g. nalbach-gw")

    @model_validator(mode="after")
    def _not_empty(self) -> Scope:
        if self.kommune is None and self.role is None and self.host is None:
            raise ValueError("needs at least one of kommune, role, host (a waiver is never estate-wide by accident)")
        return self


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="control id (gs:…, wiba:…, cis-deb12:…, devsec:…) or test id (test_x::test_y)")
    scope: Scope
    justification: str = Field(min_length=20)
    approver: str = Field(min_length=2)
    expires: dt.date

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if controls.TEST_ID.match(v):
            return v
        err = controls.problem(v)
        if err:
            raise ValueError(f"{err}; or a test id like test_base::test_sshd_option")
        return v

    @field_validator("expires", mode="before")
    @classmethod
    def _date(cls, v):
        if isinstance(v, dt.datetime) or not isinstance(v, (dt.date, str)):
            raise ValueError(f"{v!r} is not a date; expected YYYY-MM-DD")
        return v


class WaiverFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waivers: list[Waiver] = Field(default_factory=list)


@dataclass(frozen=True)
class Subject:
    """What a waiver is matched against: one check result on one host."""

    test_id: str  # module::function, e.g. test_base::test_sshd_option
    nodeid: str
    controls: tuple[str, ...]
    host: str
    kommune: str
    roles: tuple[str, ...]


def _loc(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load(path: Path, estate: Estate | None = None) -> list[Waiver]:
    """Read and validate the waiver file (missing file = no waivers). Raises WaiverError."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise WaiverError(f"{path}: cannot be read as YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise WaiverError(f"{path}: expected a mapping with a `waivers:` list")
    entries = raw.get("waivers") if isinstance(raw.get("waivers"), list) else []

    def entry_name(i: int) -> str:
        e = entries[i] if i < len(entries) else None
        return f"waivers[{i}]" + (f" ({e.get('id')})" if isinstance(e, dict) and e.get("id") else "")

    try:
        wf = WaiverFile.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = err["loc"]
            if len(loc) >= 2 and loc[0] == "waivers" and isinstance(loc[1], int):
                where = f"{entry_name(loc[1])}: {_loc(loc[2:]) or '-'}"
            else:
                where = _loc(loc) or "-"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "is missing"
            elif err["type"] == "extra_forbidden":
                msg = "is not a waiver field; expected id, scope (kommune/role/host), justification, approver, expires"
            lines.append(f"{path}: {where}: {msg}")
        raise WaiverError("\n".join(lines)) from None
    if estate is not None:
        problems = []
        roles = {r for h in estate.hosts() for r in h.roles}
        hosts = {h.name: h for h in estate.hosts()}
        for i, w in enumerate(wf.waivers):
            s = w.scope
            if s.kommune is not None and s.kommune not in estate.kommunen:
                problems.append(f"{path}: {entry_name(i)}: scope.kommune: unknown Kommune {s.kommune!r}")
            if s.role is not None and s.role not in roles:
                problems.append(
                    f"{path}: {entry_name(i)}: scope.role: unknown role {s.role!r}; expected one of {sorted(roles)}"
                )
            if s.host is not None:
                h = hosts.get(s.host)
                if h is None:
                    problems.append(f"{path}: {entry_name(i)}: scope.host: no host {s.host!r} in the model")
                elif s.kommune is not None and h.site != s.kommune:
                    problems.append(f"{path}: {entry_name(i)}: scope.host: {s.host} is not a host of {s.kommune}")
        if problems:
            raise WaiverError("\n".join(problems))
    return wf.waivers


def in_scope(w: Waiver, host: str, kommune: str, roles: tuple[str, ...]) -> bool:
    s = w.scope
    return (
        (s.kommune is None or s.kommune == kommune)
        and (s.host is None or s.host == host)
        and (s.role is None or s.role in roles)
    )


def matches(w: Waiver, subj: Subject) -> bool:
    if not in_scope(w, subj.host, subj.kommune, subj.roles):
        return False
    if w.id in subj.controls:
        return True
    return w.id == subj.test_id or w.id == subj.nodeid.split("/")[-1].replace(".py::", "::")


def expired(w: Waiver, today: dt.date) -> bool:
    """A waiver is valid through its expiry date and expired the day after."""
    return today > w.expires


def expiring_soon(w: Waiver, today: dt.date, days: int = SOON_DAYS) -> bool:
    return not expired(w, today) and (w.expires - today).days <= days


def to_dict(w: Waiver, today: dt.date) -> dict:
    return {
        "id": w.id,
        "scope": {k: v for k, v in w.scope.model_dump().items() if v is not None},
        "justification": w.justification,
        "approver": w.approver,
        "expires": w.expires.isoformat(),
        "expired": expired(w, today),
        "expiring_soon": expiring_soon(w, today),
        "days_left": (w.expires - today).days,
    }
