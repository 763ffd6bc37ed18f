"""Load inventory/ → validate every rule → derive the Estate, collecting every error at once.

`load_estate(dir)` returns an Estate or raises InventoryError holding every Problem found.
Whatever the input, nothing else escapes: a broken file is reported, never a traceback.

Every file is read by basisit.load (size limit, duplicate keys, no aliases, plain types only).
Errors are collected across and within files: a broken standard.yaml still lets the Kommune
files be checked for everything that does not depend on it, and a Kommune file with a schema
error is still checked field by field for the rest. Besides the model files, what Ansible reads
is checked too: basisit.yml, group_vars/ and host_vars/, and no stray files (see `_check_layout`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import keyword
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from basisit import load, model, schema

SAARLAND_AGS_PREFIX = "10"  # Land key of Saarland (first two digits of every AGS)
SAARLAND_DISTRICTS = {  # Kreis keys (digits 3-5 of the AGS)
    "041": "Regionalverband Saarbrücken",
    "042": "Merzig-Wadern",
    "043": "Neunkirchen",
    "044": "Saarlouis",
    "045": "Saarpfalz-Kreis",
    "046": "St. Wendel",
}
HOSTNAME = re.compile(schema.HOSTNAME_RE)
SLUG = re.compile(schema.SLUG_RE)
NETBIOS = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,14}$")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ZENTRAL_ROLES = {"zentral_gateway", "vpn_hub", "mgmt_host", "backup_server", "log_host", "package_proxy"}
SITE_ROLES = {"gateway", "ad_dc", "backup_client", "file_server", "domain_member", "endpoint"}


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    kommune: str  # slug, "zentral", "standard" or "-"
    field: str  # dotted path, "-" for the whole file
    message: str  # what is wrong and what is expected
    line: int = 0  # 1-based line in file, 0 when unknown or the whole file

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = self.field if len(self.field) <= 80 else self.field[:77] + "..."  # a key may be huge
        return f"{where}: [{self.kommune}] {field}: {self.message}"


class InventoryError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.kommune, p.field, p.message))
        super().__init__(f"{len(self.problems)} inventory error(s)")

    def report(self) -> str:
        lines = [str(p) for p in self.problems]
        lines.append(f"inventory invalid: {len(self.problems)} error(s); nothing was applied")
        return "\n".join(lines)


# --- reading files -------------------------------------------------------------------------


class _Files:
    """What was read: the loader's result per file, so every problem can be given its line."""

    def __init__(self) -> None:
        self.loaded: dict[str, load.Loaded] = {}

    def read(
        self, path: Path, who: str, problems: list[Problem], mapping: bool = True, string_tags: frozenset = frozenset()
    ) -> Any:
        """Load one file; record its problems; return its data (a mapping) or None."""
        got = load.load_file(path, string_tags=string_tags)
        self.loaded[str(path)] = got
        for lp in got.problems:
            problems.append(Problem(str(path), who, lp.field, lp.message, lp.line))
        data = got.data
        if got.problems and data is None:
            return None
        if data is None and not mapping:
            return {}
        if not isinstance(data, dict):
            problems.append(
                Problem(
                    str(path), who, "-", f"top level is {_type(data)}; expected a mapping of fields", 1 if data else 0
                )
            )
            return None
        return data

    def bad_fields(self, path: Path) -> set[str]:
        got = self.loaded.get(str(path))
        return got.bad_fields if got else set()

    def with_lines(self, problems: list[Problem]) -> list[Problem]:
        out = []
        for p in problems:
            got = self.loaded.get(p.file)
            if p.line == 0 and got is not None and p.field != "-":
                p = Problem(p.file, p.kommune, p.field, p.message, got.line_of(p.field))
            out.append(p)
        return out


def _type(value: Any) -> str:
    return "empty" if value is None else type(value).__name__


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "-"


_shown = load.shown


def _pydantic_problems(path: Path, who: str, err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop pydantic's union branch names (e.g. 'str', 'int') from the location
        loc = tuple(p for p in loc if p not in ("str", "int", "constrained-str", "constrained-int"))
        etype = e["type"]
        if etype == "missing":
            msg = "required field is missing"
        elif etype == "extra_forbidden":
            msg = f"unknown field (value {_shown(e.get('input'))}); expected only the fields of the schema"
        else:
            msg = f"{e['msg']} (got {_shown(e.get('input'))})"
        out.append(Problem(str(path), who, _loc(loc), msg))
    return out


def _under(field: str, bad: set[str]) -> bool:
    return any(field == b or field.startswith(b + ".") or field.startswith(b + "[") for b in bad)


def _parse(model_cls, data: dict, path: Path, who: str, problems: list[Problem], bad: set[str] = frozenset()):
    """Validate the shape; problems of fields the loader already reported (`bad`) are not repeated."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        problems.extend(p for p in _pydantic_problems(path, who, e) if not _under(p.field, bad))
        return None
    except (ValueError, TypeError, RecursionError) as e:  # pragma: no cover - defensive
        problems.append(Problem(str(path), who, "-", f"invalid content: {_shown(str(e))}"))
        return None


_ADAPTERS: dict[tuple[type, str], TypeAdapter] = {}


def _partial_kommune(data: dict) -> schema.KommuneFile:
    """The fields of a Kommune file that are valid on their own (the file failed its schema):
    enough to run every rule whose fields are present. Missing fields raise AttributeError."""
    fields: dict[str, Any] = {}
    for name, info in schema.KommuneFile.model_fields.items():
        if name not in data:
            continue
        value = data[name]
        if name == "endpoints" and isinstance(value, list):
            good = []
            for item in value:
                try:
                    good.append(schema.Endpoint.model_validate(item))
                except (ValidationError, ValueError, TypeError):
                    good.append(None)  # keeps the indices of the others
            fields[name] = good
            continue
        key = (schema.KommuneFile, name)
        if key not in _ADAPTERS:
            _ADAPTERS[key] = TypeAdapter(info.annotation)
        try:
            fields[name] = _ADAPTERS[key].validate_python(value)
        except (ValidationError, ValueError, TypeError):
            continue
    return schema.KommuneFile.model_construct(**fields)


# --- rules ---------------------------------------------------------------------------------


def _check_standard(std: schema.StandardFile, f: str) -> list[Problem]:
    p = _check_standard_addressing(std, f) + _check_standard_roles(std, f)
    w = "standard"
    if len(set(map(str, std.waves))) != len(std.waves):
        p.append(Problem(f, w, "waves", "duplicate wave name"))
    names = [x.name for x in std.admins]
    for n in {n for n in names if names.count(n) > 1}:
        p.append(Problem(f, w, "admins", f"duplicate admin account {n!r}"))
    zones = set(schema.ZONE_NAMES)
    for i, rule in enumerate(std.allow):
        for key, val in (("from", rule.src), ("to", rule.to)):
            target = val.split(":", 1)
            if len(target) == 2 and target[0] == "zentral":
                continue  # checked against zentral.yaml's roles and zones in _check_zentral
            elif val not in zones | SITE_ROLES | {"any"}:
                p.append(
                    Problem(
                        f,
                        w,
                        f"allow[{i}].{key}",
                        f"unknown zone or role {val!r}; expected a zone, a role, 'any' or 'zentral:<role>'",
                    )
                )
    return p


def _check_standard_addressing(std: schema.StandardFile, f: str) -> list[Problem]:
    """The block is smaller than the supernet; size classes and zones complete; zones disjoint inside the block."""
    p: list[Problem] = []
    w = "standard"
    a = std.addressing
    if a.block_prefix <= a.supernet.prefixlen:
        p.append(Problem(f, w, "addressing.block_prefix", f"/{a.block_prefix} is not smaller than the supernet"))
    for size in schema.SIZE_CLASSES:
        if size not in std.size_classes:
            p.append(Problem(f, w, f"size_classes.{size}", "size class missing; expected S, M and L"))
    for zname in schema.ZONE_NAMES:
        if zname not in a.zones:
            p.append(Problem(f, w, f"addressing.zones.{zname}", f"zone missing; expected {schema.ZONE_NAMES}"))
    block_size = 2 ** (32 - a.block_prefix)
    spans = []
    for zname, z in a.zones.items():
        start = z.index * 2 ** (32 - z.prefix)
        end = start + 2 ** (32 - z.prefix)
        if z.prefix < a.block_prefix or end > block_size:
            p.append(
                Problem(
                    f,
                    w,
                    f"addressing.zones.{zname}",
                    f"/{z.prefix} index {z.index} lies outside the /{a.block_prefix} block",
                )
            )
        for other, (s2, e2) in spans:
            if start < e2 and s2 < end:
                p.append(Problem(f, w, f"addressing.zones.{zname}", f"overlaps zone {other}; expected disjoint zones"))
        spans.append((zname, (start, end)))
    return p


def _check_standard_roles(std: schema.StandardFile, f: str) -> list[Problem]:
    """Host kinds and endpoints name known roles; every host kind has a count per size class."""
    p: list[Problem] = []
    w = "standard"
    known_roles = SITE_ROLES
    for kind, hk in std.host_kinds.items():
        for r in hk.roles:
            if r not in known_roles:
                p.append(
                    Problem(
                        f, w, f"host_kinds.{kind}.roles", f"unknown role {r!r}; expected one of {sorted(known_roles)}"
                    )
                )
        for size in schema.SIZE_CLASSES:
            if size not in hk.count:
                p.append(Problem(f, w, f"host_kinds.{kind}.count.{size}", "count missing for this size class"))
    for r in std.endpoints.roles:
        if r not in known_roles:
            p.append(Problem(f, w, "endpoints.roles", f"unknown role {r!r}; expected one of {sorted(known_roles)}"))
    return p


def _check_zentral(z: schema.ZentralFile, std: schema.StandardFile, f: str, std_file: str) -> list[Problem]:
    p: list[Problem] = []
    w = "zentral"
    for name, zone in z.zones.items():
        if not zone.cidr.subnet_of(std.addressing.supernet):
            p.append(
                Problem(
                    f, w, f"zones.{name}.cidr", f"{zone.cidr} is outside the Land supernet {std.addressing.supernet}"
                )
            )
    items = list(z.zones.items())
    for i, (n1, z1) in enumerate(items):
        for n2, z2 in items[i + 1 :]:
            if z1.cidr.overlaps(z2.cidr):
                p.append(Problem(f, w, f"zones.{n2}.cidr", f"{z2.cidr} overlaps zone {n1} ({z1.cidr})"))
    seen = set()
    for i, h in enumerate(z.hosts):
        if h.name in seen:
            p.append(Problem(f, w, f"hosts[{i}].name", f"duplicate host name {h.name!r}"))
        seen.add(h.name)
        for r in h.roles:
            if r not in ZENTRAL_ROLES:
                p.append(
                    Problem(f, w, f"hosts[{i}].roles", f"unknown role {r!r}; expected one of {sorted(ZENTRAL_ROLES)}")
                )
        for zone, n in h.addresses.items():
            if zone not in z.zones:
                p.append(
                    Problem(f, w, f"hosts[{i}].addresses.{zone}", f"unknown zone; expected one of {sorted(z.zones)}")
                )
            elif not 1 <= n < z.zones[zone].cidr.num_addresses - 1:
                p.append(Problem(f, w, f"hosts[{i}].addresses.{zone}", f"host number {n} outside {z.zones[zone].cidr}"))
    for i, rule in enumerate(std.allow):
        for key, val in (("from", rule.src), ("to", rule.to)):
            if val.startswith("zentral:") and val[8:] not in ZENTRAL_ROLES | set(z.zones):
                p.append(
                    Problem(
                        std_file,
                        "standard",
                        f"allow[{i}].{key}",
                        f"unknown zentral role or zone {val[8:]!r}; expected one of {sorted(ZENTRAL_ROLES | set(z.zones))}",
                    )
                )
    if "vpn" not in z.zones:
        p.append(Problem(f, w, "zones.vpn", "zone missing; the WireGuard overlay needs a vpn zone"))
    return p


def _domain_problem(name, example: str, instead: str) -> str | None:
    """What is wrong with an AD/DNS domain name, or None."""
    if not _dns_name_ok(name):
        return f"{_shown(name)} is not a valid DNS domain; expected lower-case labels such as '{example}'"
    if name.split(".")[-1] == "local":
        return f"'.local' is reserved for mDNS; {instead}"
    return None


def _dns_name_ok(name: str) -> bool:
    labels = name.split(".")
    return name == name.lower() and len(labels) >= 2 and len(name) <= 253 and all(DNS_LABEL.match(x) for x in labels)


def _check_standard_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """What a reviewer of the standard expects beyond its shape."""
    p = _standard_size_class_rules(std, f)
    if not std.waves:
        p.append(Problem(f, "standard", "waves", "no waves; expected at least one rollout wave"))
    p += _standard_service_rules(std, f)
    p += _standard_access_rules(std, f)
    p += _standard_allow_rules(std, f)
    p += _standard_host_number_rules(std, f)
    p += _standard_addressing_rules(std, f)
    return p


def _standard_size_class_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """Size classes: ascending limits, the last one open, so every population has exactly one class."""
    p: list[Problem] = []
    w = "standard"
    present = [s for s in schema.SIZE_CLASSES if s in std.size_classes]
    prev: tuple[str, int] | None = None
    for n, size in enumerate(present):
        limit = std.size_classes[size].max_population
        last = n == len(present) - 1
        fld = f"size_classes.{size}.max_population"
        if limit is None and not last:
            later = ", ".join(present[n + 1 :])
            p.append(
                Problem(
                    f,
                    w,
                    fld,
                    f"null (no upper limit) before {later}, which could never apply; expected null only for {present[-1]}",
                )
            )
            break
        if limit is not None and last:
            p.append(
                Problem(
                    f,
                    w,
                    fld,
                    f"{limit} leaves populations above it without a size class; expected null (no upper limit) for the last class",
                )
            )
        if limit is not None and limit < 0:
            p.append(Problem(f, w, fld, f"{limit} is negative; expected a number of inhabitants"))
        if limit is not None and prev is not None and limit <= prev[1]:
            p.append(
                Problem(
                    f,
                    w,
                    fld,
                    f"{limit} is not above {prev[0]}'s {prev[1]}, so {size} could never apply; expected ascending limits S < M < L",
                )
            )
        if limit is not None:
            prev = (size, limit)
    return p


def _standard_service_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """The services' settings: AD domain suffix, password policy, lockout, backup, NTP, DNS, endpoint OS."""
    p: list[Problem] = []
    w = "standard"
    ad = std.services.ad
    bad = _domain_problem(ad.domain_suffix, "basisit.internal", "expected e.g. 'basisit.internal'")
    if bad:
        p.append(Problem(f, w, "services.ad.domain_suffix", bad))
    pw = std.services.password_policy
    if pw.max_age_days and pw.min_age_days >= pw.max_age_days:
        p.append(
            Problem(
                f,
                w,
                "services.password_policy.min_age_days",
                f"{pw.min_age_days} is not below max_age_days {pw.max_age_days}; expected min < max (or max 0 for no expiry)",
            )
        )
    lo = std.services.lockout
    if lo.observation_window_minutes > lo.duration_minutes:
        p.append(
            Problem(
                f,
                w,
                "services.lockout.observation_window_minutes",
                f"{lo.observation_window_minutes} exceeds duration_minutes {lo.duration_minutes}; AD requires the window <= the lockout duration",
            )
        )
    if not any(std.services.backup.retention.values()):
        p.append(
            Problem(
                f, w, "services.backup.retention", "every keep_* is 0, so nothing is kept; expected at least one > 0"
            )
        )
    if not std.services.ntp.servers:
        p.append(Problem(f, w, "services.ntp.servers", "empty; expected at least one NTP server"))
    if not std.services.dns.forwarders:
        p.append(Problem(f, w, "services.dns.forwarders", "empty; expected at least one DNS forwarder"))
    if not std.endpoints.os:
        p.append(Problem(f, w, "endpoints.os", "empty; expected at least one endpoint OS"))
    return p


def _standard_access_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """Admin sudo without a password needs a reason; admins' uids are unique."""
    p: list[Problem] = []
    w = "standard"
    sudo = std.access.admin_sudo
    reason = (sudo.reason or "").strip()
    if sudo.nopasswd and not reason:
        p.append(
            Problem(
                f,
                w,
                "access.admin_sudo.reason",
                "missing; nopasswd: true lets every admin's sudo skip the password: say why (a reason)",
            )
        )
    if not sudo.nopasswd and sudo.reason is not None:
        p.append(
            Problem(
                f,
                w,
                "access.admin_sudo.reason",
                "given, but nopasswd is false (admins re-authenticate): nothing to justify; remove it",
            )
        )
    uids: dict[int, str] = {}
    for i, a in enumerate(std.admins):
        if a.uid in uids:
            p.append(Problem(f, w, f"admins[{i}].uid", f"uid {a.uid} is also {uids[a.uid]!r}'s; expected unique uids"))
        uids.setdefault(a.uid, a.name)
    return p


def _standard_allow_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """Allow rules: unique names, a protocol and ports each."""
    p: list[Problem] = []
    w = "standard"
    rules: dict[str, int] = {}
    for i, rule in enumerate(std.allow):
        if rule.name in rules:
            p.append(
                Problem(f, w, f"allow[{i}].name", f"duplicate rule name {rule.name!r} (also allow[{rules[rule.name]}])")
            )
        rules.setdefault(rule.name, i)
        if not rule.proto:
            p.append(Problem(f, w, f"allow[{i}].proto", "empty; expected tcp and/or udp"))
        if not rule.ports:
            p.append(Problem(f, w, f"allow[{i}].ports", "empty; expected at least one port"))
    return p


def _standard_host_number_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """One gateway kind; fixed host numbers inside their zone, and no two kinds (nor the gateway) on one address."""
    p: list[Problem] = []
    w = "standard"
    gateways = [kind for kind, hk in std.host_kinds.items() if "gateway" in hk.roles]
    if len(gateways) != 1:
        p.append(Problem(f, w, "host_kinds", f"{len(gateways)} host kinds with role gateway; expected exactly one"))
    a = std.addressing
    taken: dict[tuple[str, int], str] = {}
    for zname in a.zones:
        taken[(zname, a.gateway_host)] = "the gateway"
    for kind, hk in std.host_kinds.items():
        if "gateway" in hk.roles or hk.zone not in a.zones:
            continue
        most = max(hk.count.values(), default=0)
        size = 2 ** (32 - a.zones[hk.zone].prefix)
        first = hk.host or 1
        for n in range(first, first + most):
            if not 1 <= n < size - 1:
                p.append(
                    Problem(
                        f,
                        w,
                        f"host_kinds.{kind}.host",
                        f"host number {n} does not fit the /{a.zones[hk.zone].prefix} {hk.zone} zone",
                    )
                )
                break
            if (hk.zone, n) in taken:
                p.append(
                    Problem(
                        f,
                        w,
                        f"host_kinds.{kind}.host",
                        f"{hk.zone} host {n} is also {taken[(hk.zone, n)]}; expected distinct addresses",
                    )
                )
                break
            taken[(hk.zone, n)] = kind
    return p


def _standard_addressing_rules(std: schema.StandardFile, f: str) -> list[Problem]:
    """The transfer hosts: two addresses inside the transfer zone; room for endpoints in the client zone."""
    p: list[Problem] = []
    w = "standard"
    a = std.addressing
    if a.transfer_zentral_host == a.transfer_gateway_host:
        p.append(
            Problem(
                f,
                w,
                "addressing.transfer_gateway_host",
                "same host number as transfer_zentral_host; expected two addresses",
            )
        )
    transfer = a.zones.get("transfer")
    if transfer is not None:
        room = 2 ** (32 - transfer.prefix) - 2
        for fld in ("transfer_zentral_host", "transfer_gateway_host"):
            if getattr(a, fld) > room:
                p.append(
                    Problem(
                        f,
                        w,
                        f"addressing.{fld}",
                        f"{getattr(a, fld)} does not fit the /{transfer.prefix} transfer zone",
                    )
                )
    client = a.zones.get("client")
    if client is not None and a.endpoint_first_host + 1 >= 2 ** (32 - client.prefix) - 1:
        p.append(
            Problem(
                f,
                w,
                "addressing.endpoint_first_host",
                f"{a.endpoint_first_host} leaves no room for endpoints in the /{client.prefix} client zone",
            )
        )
    return p


def _kommune_slug_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """The slug inside the file is the one in its name."""
    if k.slug != slug:
        p.append(Problem(f, slug, "slug", f"{_shown(k.slug)} does not match the file name; expected {slug!r}"))


def _kommune_ags_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """The AGS: 8 digits, a Saarland district key, and the district it names."""
    if not re.fullmatch(r"\d{8}", k.ags):
        p.append(
            Problem(
                f,
                slug,
                "ags",
                f"{_shown(k.ags)} is not 8 digits; expected the Amtlicher Gemeindeschlüssel, e.g. '10045111'",
            )
        )
    elif not k.ags.startswith(SAARLAND_AGS_PREFIX) or k.ags[2:5] not in SAARLAND_DISTRICTS:
        p.append(
            Problem(
                f,
                slug,
                "ags",
                f"{k.ags!r} is not a Saarland code; expected '10' + a Saarland district key ({', '.join(sorted(SAARLAND_DISTRICTS))})",
            )
        )
    elif SAARLAND_DISTRICTS[k.ags[2:5]] != k.district:
        p.append(
            Problem(
                f,
                slug,
                "district",
                f"{_shown(k.district)} does not match the AGS district key {k.ags[2:5]}; expected {SAARLAND_DISTRICTS[k.ags[2:5]]!r}",
            )
        )


def _kommune_population_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """The population: a count >= 0, dated not in the future."""
    if k.population.count < 0:
        p.append(
            Problem(
                f, slug, "population.count", f"{k.population.count} is negative; expected a number of inhabitants >= 0"
            )
        )
    if k.population.date > dt.date.today():
        p.append(
            Problem(
                f,
                slug,
                "population.date",
                f"{k.population.date} lies in the future; expected the date the count refers to",
            )
        )


def _kommune_size_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """An explicit size class is a known one."""
    if k.size is not None and k.size not in schema.SIZE_CLASSES:
        p.append(
            Problem(
                f, slug, "size", f"unknown size class {_shown(k.size)}; expected one of {list(schema.SIZE_CLASSES)}"
            )
        )


def _kommune_domain_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """The AD domain is a valid DNS name (not .local)."""
    bad = _domain_problem(k.ad_domain, f"{slug}.basisit.internal", "expected a domain under the standard's suffix")
    if bad:
        p.append(Problem(f, slug, "ad_domain", bad))


def _kommune_netbios_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """The NetBIOS domain name: 1-15 upper-case letters, digits or '-'."""
    if not NETBIOS.match(k.netbios):
        p.append(
            Problem(
                f,
                slug,
                "netbios",
                f"{_shown(k.netbios)} is not a valid NetBIOS domain name; expected 1-15 upper-case letters, digits or '-'",
            )
        )


def _kommune_endpoints_rule(k: schema.KommuneFile, slug: str, f: str, p: list[Problem]) -> None:
    """Endpoints: valid hostnames, no duplicate hostname, index or asset tag."""
    seen_host: dict[str, int] = {}
    seen_idx: dict[int, int] = {}
    seen_tag: dict[str, int] = {}
    for i, ep in enumerate(k.endpoints):
        if ep is None:
            continue
        fld = f"endpoints[{i}]"
        if not HOSTNAME.match(ep.hostname) or len(ep.hostname) > 15:
            p.append(
                Problem(
                    f,
                    slug,
                    f"{fld}.hostname",
                    f"{_shown(ep.hostname)} is not a valid hostname; expected 1-15 lower-case letters, digits or '-' (NetBIOS limit)",
                )
            )
        if ep.hostname in seen_host:
            p.append(
                Problem(
                    f,
                    slug,
                    f"{fld}.hostname",
                    f"duplicate endpoint hostname {_shown(ep.hostname)} (also endpoints[{seen_host[ep.hostname]}])",
                )
            )
        seen_host.setdefault(ep.hostname, i)
        if ep.index in seen_idx:
            p.append(
                Problem(
                    f,
                    slug,
                    f"{fld}.index",
                    f"duplicate endpoint index {ep.index} (also endpoints[{seen_idx[ep.index]}])",
                )
            )
        seen_idx.setdefault(ep.index, i)
        tag = ep.asset_tag.upper()
        if tag in seen_tag:
            p.append(
                Problem(
                    f,
                    slug,
                    f"{fld}.asset_tag",
                    f"duplicate asset tag {_shown(ep.asset_tag)} (also endpoints[{seen_tag[tag]}]); expected one tag per device",
                )
            )
        seen_tag.setdefault(tag, i)


_KOMMUNE_OWN_RULES = (
    _kommune_slug_rule,
    _kommune_ags_rule,
    _kommune_population_rule,
    _kommune_size_rule,
    _kommune_domain_rule,
    _kommune_netbios_rule,
    _kommune_endpoints_rule,
)  # each appends its problems to p; it stops at a missing or invalid field (AttributeError)


def _kommune_own_rules(k: schema.KommuneFile, slug: str, f: str) -> list[Problem]:
    """Rules of a Kommune file that do not depend on the standard."""
    p: list[Problem] = []
    w = slug
    if not SLUG.match(slug):
        p.append(
            Problem(f, w, "slug", f"{_shown(slug)} is not a valid slug; expected lower-case ASCII words joined by '-'")
        )

    for rule in _KOMMUNE_OWN_RULES:
        with contextlib.suppress(AttributeError):  # that field is missing or invalid: already reported
            rule(k, slug, f, p)
    return p


def _kommune_standard_rules(
    k: schema.KommuneFile, slug: str, std: schema.StandardFile, f: str, addressing_ok: bool
) -> list[Problem]:
    """Rules of a Kommune file judged against the standard."""
    p: list[Problem] = []
    w = slug
    waves = [str(x) for x in std.waves]
    for _name, fn in (
        (
            "wave",
            lambda: (
                str(k.wave) in waves
                or p.append(Problem(f, w, "wave", f"unknown wave {_shown(k.wave)}; expected one of {waves}"))
            ),
        ),
        ("net_index", lambda: _net_index_rule(k, slug, std, f, p) if addressing_ok else None),
        ("ad_domain", lambda: _domain_suffix_rule(k, slug, std, f, p)),
        ("endpoints", lambda: _endpoint_standard_rules(k, slug, std, f, p)),
    ):
        with contextlib.suppress(AttributeError):
            fn()
    return p


def _net_index_rule(k, slug, std, f, p) -> None:
    hi = model.max_net_index(std)
    if not 1 <= k.net_index <= hi:
        p.append(
            Problem(
                f,
                slug,
                "net_index",
                f"{k.net_index} is out of range; expected 1..{hi} (blocks of /{std.addressing.block_prefix} in {std.addressing.supernet})",
            )
        )


def _domain_suffix_rule(k, slug, std, f, p) -> None:
    suffix = std.services.ad.domain_suffix
    if _dns_name_ok(k.ad_domain) and not k.ad_domain.endswith("." + suffix):
        p.append(
            Problem(
                f,
                slug,
                "ad_domain",
                f"{_shown(k.ad_domain)} is not under the standard's suffix {suffix!r}; expected '{slug}.{suffix}'",
            )
        )


def _endpoint_standard_rules(k, slug, std, f, p) -> None:
    reserved = {f"{kind}{n}" for kind in std.host_kinds for n in range(1, 10)} | set(std.host_kinds)
    client = std.addressing.zones.get("client")
    room = 2 ** (32 - client.prefix) - 2 - std.addressing.endpoint_first_host if client is not None else None
    for i, ep in enumerate(k.endpoints):
        if ep is None:
            continue
        fld = f"endpoints[{i}]"
        if ep.hostname in reserved:
            p.append(
                Problem(
                    f,
                    slug,
                    f"{fld}.hostname",
                    f"{ep.hostname!r} is reserved for the site's servers; expected another name",
                )
            )
        if room is not None and ep.index > room:
            p.append(Problem(f, slug, f"{fld}.index", f"{ep.index} does not fit the client zone; expected 1..{room}"))
        if ep.os not in std.endpoints.os:
            p.append(Problem(f, slug, f"{fld}.os", f"unknown OS {_shown(ep.os)}; expected one of {std.endpoints.os}"))


def _get(obj: Any, fn) -> Any:
    try:
        return fn(obj)
    except AttributeError:  # a field missing from a partially valid file
        return None


# The Kommune fields no two Kommunen may share, each as the estate compares it.
_UNIQUE_FIELDS = (
    ("ags", lambda k: k.ags),
    ("net_index", lambda k: k.net_index),
    ("ad_domain", lambda k: k.ad_domain.lower()),
    ("netbios", lambda k: k.netbios.upper()),
    ("name", lambda k: k.name),
)


def _check_estate(
    kommunen: dict[str, tuple[schema.KommuneFile, str]],
    zentral: model.Site | None,
    std: schema.StandardFile | None,
    addressing_ok: bool,
) -> list[Problem]:
    """What no single file shows: values two Kommunen share, and blocks the central site needs."""
    p = _duplicate_fields(kommunen) + _duplicate_slugs(kommunen) + _duplicate_asset_tags(kommunen)
    if std is None or not addressing_ok:
        return p
    hi = model.max_net_index(std)
    blocks = {}
    for slug, (k, _f) in kommunen.items():
        n = _get(k, lambda k: k.net_index)
        if n is not None and 1 <= n <= hi:
            blocks[slug] = model.kommune_block(std, n)
    if zentral is not None:
        p += _without_tunnel_address(kommunen, zentral, hi)
        p += _blocks_overlapping_zentral(kommunen, blocks, zentral)
    return p


def _duplicate_fields(kommunen: dict[str, tuple[schema.KommuneFile, str]]) -> list[Problem]:
    p: list[Problem] = []
    for fld, key in _UNIQUE_FIELDS:
        groups: dict[Any, list[str]] = defaultdict(list)
        for slug, (k, _f) in kommunen.items():
            value = _get(k, key)
            if value is not None:
                groups[value].append(slug)
        for value, slugs in groups.items():
            if len(slugs) > 1:
                for slug in slugs:
                    others = ", ".join(s for s in slugs if s != slug)
                    p.append(
                        Problem(
                            kommunen[slug][1],
                            slug,
                            fld,
                            f"duplicate {fld} {_shown(value)} (also used by {others}); expected a unique value",
                        )
                    )
    return p


def _duplicate_slugs(kommunen: dict[str, tuple[schema.KommuneFile, str]]) -> list[Problem]:
    p: list[Problem] = []
    slugs_seen: dict[str, str] = {}
    for slug, (k, f) in kommunen.items():
        ks = _get(k, lambda k: k.slug)
        if ks is None:
            continue
        if ks in slugs_seen and slugs_seen[ks] != slug:
            p.append(Problem(f, slug, "slug", f"duplicate slug {_shown(ks)} (also {slugs_seen[ks]})"))
        slugs_seen.setdefault(ks, slug)
    return p


def _duplicate_asset_tags(kommunen: dict[str, tuple[schema.KommuneFile, str]]) -> list[Problem]:
    """An asset tag names one device of the estate (it is the DHCP reservation key)."""
    p: list[Problem] = []
    tags: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for slug, (k, _f) in kommunen.items():
        for i, ep in enumerate(_get(k, lambda k: k.endpoints) or []):
            if ep is not None:
                tags[ep.asset_tag.upper()].append((slug, i))
    for uses in tags.values():
        sites = {s for s, _ in uses}
        if len(sites) > 1:
            for slug, i in uses:
                others = ", ".join(sorted(f"{s} endpoints[{j}]" for s, j in uses if s != slug))
                tag = kommunen[slug][0].endpoints[i].asset_tag
                p.append(
                    Problem(
                        kommunen[slug][1],
                        slug,
                        f"endpoints[{i}].asset_tag",
                        f"duplicate asset tag {_shown(tag)} (also {others}); expected one tag per device in the estate",
                    )
                )
    return p


def _without_tunnel_address(
    kommunen: dict[str, tuple[schema.KommuneFile, str]], zentral: model.Site, hi: int
) -> list[Problem]:
    """A Kommune's tunnel address is its net_index in the zentral vpn zone."""
    p: list[Problem] = []
    vpn = zentral.zones.get("vpn")
    for slug, (k, f) in kommunen.items():
        n = _get(k, lambda k: k.net_index)
        if vpn is not None and n is not None and 1 <= n <= hi and n > vpn.network.num_addresses - 2:
            p.append(
                Problem(
                    f,
                    slug,
                    "net_index",
                    f"{n} has no tunnel address in the zentral vpn zone {vpn.network}; expected at most {vpn.network.num_addresses - 2}",
                )
            )
    return p


def _blocks_overlapping_zentral(
    kommunen: dict[str, tuple[schema.KommuneFile, str]], blocks: dict[str, Any], zentral: model.Site
) -> list[Problem]:
    p: list[Problem] = []
    for slug, block in blocks.items():
        for zname, zone in zentral.zones.items():
            if block.overlaps(zone.network):
                p.append(
                    Problem(
                        kommunen[slug][1],
                        slug,
                        "net_index",
                        f"block {block} overlaps the zentral zone {zname} ({zone.network}); expected a net_index whose block is free",
                    )
                )
    return p


# --- what Ansible reads, and nothing else ----------------------------------------------------

TOP_LEVEL = {
    "standard.yaml": "the standard",
    "zentral.yaml": "the central site",
    "waivers.yaml": "compliance waivers (basisit verify)",
    "basisit.yml": "the Ansible inventory source",
    "kommunen": "one file per Kommune",
    "group_vars": "Ansible group variables",
    "host_vars": "Ansible host variables",
}
# The plugin's own options, Constructable's and Cacheable's (plugins/inventory/basisit.py).
PLUGIN_OPTIONS = {"plugin", "inventory_dir", "state_dir"} | {
    "compose",
    "groups",
    "keyed_groups",
    "strict",
    "use_extra_vars",
    "leading_separator",
    "cache",
    "cache_plugin",
    "cache_timeout",
    "cache_connection",
    "cache_prefix",
}
# Its collection name (an AWX inventory source) and the short name (inventory_plugins).
PLUGIN_NAMES = ("egosaar.basisit.basisit", "basisit")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VARS_SUFFIXES = (".yml", ".yaml", ".json")
ANSIBLE_STRING_TAGS = frozenset({"!vault", "!unsafe"})  # Ansible's own scalar tags, fine in *_vars


def _group_name(*parts: object) -> str:
    """As the inventory plugin names groups (plugins/inventory/basisit.py: group_name)."""
    return re.sub(r"[^a-z0-9_]+", "_", "_".join(str(p) for p in parts).lower()).strip("_")


def _known_groups(kommunen: dict, std: schema.StandardFile | None) -> set[str] | None:
    groups = {"all", "ungrouped", "kommunen", "zentral", "not_realised"} | SITE_ROLES | ZENTRAL_ROLES
    groups |= set(kommunen)
    groups |= {_group_name("district", d) for d in SAARLAND_DISTRICTS.values()}
    groups |= {_group_name("size", s) for s in schema.SIZE_CLASSES}
    if std is None:
        return None  # wave groups unknown: do not judge group names
    groups |= {_group_name("wave", x) for x in std.waves}
    return groups


def _check_vars_dir(root: Path, kind: str, known: set[str] | None, hosts_ok, files: _Files, p: list[Problem]) -> None:
    """group_vars/ or host_vars/: each entry names a group or host of the inventory, each file is
    YAML Ansible reads, each key a variable name."""
    base = root / kind
    if not base.exists():
        return
    if not base.is_dir():
        p.append(Problem(str(base), "-", "-", f"is a file; expected a directory of {kind} files"))
        return
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        if not _check_vars_target(entry, kind, known, hosts_ok, p):
            continue
        paths = (
            [entry]
            if entry.is_file()
            else sorted(x for x in entry.rglob("*") if x.is_file() and not x.name.startswith("."))
        )
        for path in paths:
            if path is not entry and not path.name.endswith(VARS_SUFFIXES):
                p.append(Problem(str(path), "-", "-", "Ansible ignores this file; expected a .yml file"))
                continue
            _check_var_names(path, files, p)


def _check_vars_target(entry: Path, kind: str, known: set[str] | None, hosts_ok, p: list[Problem]) -> bool:
    """The group or host a vars entry is for; False when Ansible ignores the entry."""
    name = entry.name
    target = name if entry.is_dir() else next((name[: -len(x)] for x in VARS_SUFFIXES if name.endswith(x)), None)
    if target is None:
        p.append(
            Problem(
                str(entry),
                "-",
                "-",
                f"Ansible ignores this file; expected {kind}/<name>.yml or {kind}/<name>/*.yml",
            )
        )
        return False
    if kind == "group_vars" and known is not None and target not in known:
        p.append(
            Problem(
                str(entry),
                "-",
                "-",
                f"no group {_shown(target)} in the inventory; expected 'all', 'kommunen', 'zentral', a Kommune slug, a role, or district_*/wave_*/size_* groups",
            )
        )
    if kind == "host_vars" and not hosts_ok(target):
        p.append(
            Problem(
                str(entry),
                "-",
                "-",
                f"no host {_shown(target)} in the inventory; expected <site>-<host>, e.g. nalbach-dc1",
            )
        )
    return True


def _check_var_names(path: Path, files: _Files, p: list[Problem]) -> None:
    data = files.read(path, "-", p, mapping=False, string_tags=ANSIBLE_STRING_TAGS)
    if data is None:
        return
    for key in data:
        if not isinstance(key, str) or not VAR_NAME.match(key) or keyword.iskeyword(key):
            p.append(
                Problem(
                    str(path),
                    "-",
                    str(key)[:60],
                    f"{_shown(key)} is not a valid Ansible variable name; expected letters, digits and '_'",
                )
            )


def _check_layout(root: Path, kommunen: dict, std: schema.StandardFile | None, files: _Files) -> list[Problem]:
    """basisit.yml, group_vars/, host_vars/, waivers.yaml (as YAML) and no unknown entries."""
    p = _unknown_top_level(root)
    src = root / "basisit.yml"
    if src.exists():
        data = files.read(src, "-", p)
        if data is not None:
            p += _check_plugin_source(src, data, root)
    waivers = root / "waivers.yaml"
    if waivers.exists():
        files.read(waivers, "-", p, mapping=False)
    known = _known_groups(kommunen, std)
    sites = set(kommunen) | {"zentral"}

    def host_ok(name: str) -> bool:
        return any(name.startswith(s + "-") and len(name) > len(s) + 1 for s in sites)

    _check_vars_dir(root, "group_vars", known, host_ok, files, p)
    _check_vars_dir(root, "host_vars", known, host_ok, files, p)
    return p


def _unknown_top_level(root: Path) -> list[Problem]:
    """Ansible tries to parse every file it finds in an inventory directory."""
    p: list[Problem] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in TOP_LEVEL:
            continue
        hint = ""
        if entry.suffix in (".yml", ".yaml") and (root / "kommunen").is_dir():
            hint = f"; a Kommune file belongs in kommunen/{entry.stem}.yaml"
        p.append(
            Problem(
                str(entry),
                "-",
                "-",
                f"unknown entry in the inventory directory (Ansible would try to parse it){hint}; expected only {', '.join(sorted(TOP_LEVEL))}",
            )
        )
    return p


def _check_plugin_source(src: Path, data: dict, root: Path) -> list[Problem]:
    """basisit.yml names this plugin, only its options, and this directory."""
    p: list[Problem] = []
    for key in data:
        if key not in PLUGIN_OPTIONS:
            p.append(
                Problem(
                    str(src),
                    "-",
                    str(key)[:60],
                    f"unknown option {_shown(key)} of the basisit inventory plugin; expected {sorted(PLUGIN_OPTIONS)}",
                )
            )
    if data.get("plugin") not in PLUGIN_NAMES:
        p.append(
            Problem(
                str(src),
                "-",
                "plugin",
                f"{_shown(data.get('plugin'))} is not the basisit inventory plugin; expected 'plugin: basisit' or 'plugin: egosaar.basisit.basisit' (Ansible would find 0 hosts)",
            )
        )
    inv_dir = data.get("inventory_dir", ".")
    if not isinstance(inv_dir, str) or (root / inv_dir).resolve() != root.resolve():
        p.append(
            Problem(
                str(src),
                "-",
                "inventory_dir",
                f"{_shown(inv_dir)} is not this directory; expected '.' (Ansible would read another inventory than this one)",
            )
        )
    if "state_dir" in data and not isinstance(data["state_dir"], str):
        p.append(
            Problem(
                str(src),
                "-",
                "state_dir",
                f"{_shown(data['state_dir'])} is not a path; expected a directory name",
            )
        )
    return p


def _kommune_files(kdir: Path, p: list[Problem]) -> list[Path]:
    """kommunen/<slug>.yaml; anything else there is an error (hidden files are ignored)."""
    out = []
    if not kdir.is_dir():
        p.append(Problem(str(kdir), "-", "-", "directory missing; expected kommunen/<slug>.yaml, one file per Kommune"))
        return out
    for path in sorted(kdir.iterdir()):
        name = path.name
        if name.startswith("."):
            continue  # editor swap files, .gitkeep: never a Kommune
        if path.is_dir():
            p.append(Problem(str(path), "-", "-", "a directory in kommunen/; expected only kommunen/<slug>.yaml files"))
        elif name.endswith(".yaml") and path.is_file():
            out.append(path)
        elif path.suffix.lower() in (".yml", ".yaml"):
            p.append(
                Problem(
                    str(path), path.stem, "-", f"not read: Kommune files end in '.yaml'; rename it to {path.stem}.yaml"
                )
            )
        else:
            p.append(
                Problem(
                    str(path),
                    "-",
                    "-",
                    "not read: not a Kommune file; expected kommunen/<slug>.yaml (move backups and other files elsewhere)",
                )
            )
    if not out:
        p.append(Problem(str(kdir), "-", "-", "no Kommune files found; expected kommunen/<slug>.yaml"))
    return out


# --- entry point ---------------------------------------------------------------------------


def load_estate(inventory: str | Path) -> model.Estate:
    """Read, validate and derive the whole inventory; raise InventoryError with every problem."""
    root = Path(inventory)
    if not root.is_dir():
        raise InventoryError(
            [
                Problem(
                    str(root),
                    "-",
                    "-",
                    "inventory directory not found; expected a directory with standard.yaml, zentral.yaml and kommunen/",
                )
            ]
        )
    files = _Files()
    problems: list[Problem] = []
    std_path, z_path = root / "standard.yaml", root / "zentral.yaml"
    std, addressing_ok = _read_standard(std_path, files, problems)
    zentral = _read_zentral(z_path, std, std_path, addressing_ok, files, problems)
    kommunen = _read_kommunen(root / "kommunen", std, addressing_ok, files, problems)
    problems.extend(_check_estate(kommunen, zentral, std, addressing_ok))
    problems.extend(_check_layout(root, kommunen, std, files))
    if problems or zentral is None or std is None:
        raise InventoryError(files.with_lines(problems))
    sites = _derive_sites(std, zentral, kommunen, files)
    _check_derived_networks(zentral, sites, kommunen, z_path, files)
    active = {s: site for s, site in sites.items() if kommunen[s][0].status != "retired"}
    retired = {s: site for s, site in sites.items() if s not in active}
    return model.Estate(
        standard=std, zentral=zentral, kommunen=active, sources={s: kommunen[s][1] for s in sites}, retired=retired
    )


def _read_standard(std_path: Path, files: _Files, problems: list[Problem]) -> tuple[schema.StandardFile | None, bool]:
    """standard.yaml and its rules; whether its addressing is sound enough to place blocks."""
    raw = files.read(std_path, "standard", problems)
    std = (
        _parse(schema.StandardFile, raw, std_path, "standard", problems, files.bad_fields(std_path))
        if raw is not None
        else None
    )
    addressing_ok = False
    if std is not None:
        sp = _check_standard(std, str(std_path)) + _check_standard_rules(std, str(std_path))
        problems.extend(sp)
        addressing_ok = not any(x.field.startswith("addressing") for x in sp)
    return std, addressing_ok


def _read_zentral(
    z_path: Path,
    std: schema.StandardFile | None,
    std_path: Path,
    addressing_ok: bool,
    files: _Files,
    problems: list[Problem],
) -> model.Site | None:
    """zentral.yaml, checked against the standard; the central site when both are sound."""
    raw = files.read(z_path, "zentral", problems)
    zfile = (
        _parse(schema.ZentralFile, raw, z_path, "zentral", problems, files.bad_fields(z_path))
        if raw is not None
        else None
    )
    if zfile is None or std is None:
        return None
    zp = _check_zentral(zfile, std, str(z_path), str(std_path))
    problems.extend(zp)
    if not zp and addressing_ok:
        return model.derive_zentral(zfile, std.addressing.gateway_host)
    return None


def _read_kommunen(
    kdir: Path, std: schema.StandardFile | None, addressing_ok: bool, files: _Files, problems: list[Problem]
) -> dict[str, tuple[schema.KommuneFile, str]]:
    """Every Kommune file with its own rules and the standard's; slug -> (file, path). A file
    that fails its schema is kept as far as it is valid, so its other rules still run."""
    kommunen: dict[str, tuple[schema.KommuneFile, str]] = {}
    for path in _kommune_files(kdir, problems):
        slug = path.stem
        raw = files.read(path, slug, problems)
        if raw is None:
            continue
        k = _parse(schema.KommuneFile, raw, path, slug, problems, files.bad_fields(path))
        if k is None:
            k = _partial_kommune(raw)  # still check what is there
        problems.extend(_kommune_own_rules(k, slug, str(path)))
        if std is not None:
            problems.extend(_kommune_standard_rules(k, slug, std, str(path), addressing_ok))
        kommunen[slug] = (k, str(path))
    return kommunen


def _derive_sites(
    std: schema.StandardFile,
    zentral: model.Site,
    kommunen: dict[str, tuple[schema.KommuneFile, str]],
    files: _Files,
) -> dict[str, model.Site]:
    """Each Kommune's site, in slug order; raise InventoryError naming every one that fails."""
    problems: list[Problem] = []
    sites = {}
    for slug, (k, f) in sorted(kommunen.items()):
        try:
            sites[slug] = model.derive_kommune(std, zentral, k)
        except (ValueError, KeyError) as e:
            problems.append(Problem(f, slug, "-", f"cannot derive the site: {_shown(str(e))}"))
    if problems:
        raise InventoryError(files.with_lines(problems))
    return sites


def _check_derived_networks(
    zentral: model.Site,
    sites: dict[str, model.Site],
    kommunen: dict[str, tuple[schema.KommuneFile, str]],
    z_path: Path,
    files: _Files,
) -> None:
    """Overlaps between derived networks (catches a standard whose zones escape the block)."""
    problems: list[Problem] = []
    nets = [(s.slug, z.name, z.network) for s in [zentral, *sites.values()] for z in s.zones.values()]
    nets.sort(key=lambda t: (int(t[2].network_address), t[2].prefixlen))
    for (s1, z1, n1), (s2, z2, n2) in itertools.pairwise(nets):
        if n1.overlaps(n2) and s1 != s2:
            f = kommunen[s2][1] if s2 in kommunen else str(z_path)
            problems.append(
                Problem(f, s2, f"zones.{z2}", f"{n2} overlaps {s1} zone {z1} ({n1}); expected disjoint networks")
            )
    if problems:
        raise InventoryError(files.with_lines(problems))


def summary(estate: model.Estate) -> str:
    hosts = len(estate.hosts())
    retired = f" ({len(estate.retired)} retired)" if estate.retired else ""
    return f"{len(estate.kommunen)} Kommunen{retired}, 1 central site, {hosts} hosts, standard v{estate.standard.version}: valid"
