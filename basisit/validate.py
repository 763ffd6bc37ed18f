"""Load inventory/ → validate every rule → derive the Estate, collecting every error at once.

`load_estate(dir)` returns an Estate or raises InventoryError holding every Problem found.
Whatever the input, nothing else escapes: a broken file is reported, never a traceback.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from basisit import model, schema

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
ZENTRAL_ROLES = {"zentral_gateway", "vpn_hub", "mgmt_host", "backup_server", "log_host"}
SITE_ROLES = {"gateway", "ad_dc", "backup_client", "file_server", "domain_member", "endpoint"}


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    kommune: str  # slug, "zentral", "standard" or "-"
    field: str  # dotted path, "-" for the whole file
    message: str  # what is wrong and what is expected

    def __str__(self) -> str:
        return f"{self.file}: [{self.kommune}] {self.field}: {self.message}"


class InventoryError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__(f"{len(self.problems)} inventory error(s)")

    def report(self) -> str:
        lines = [str(p) for p in self.problems]
        lines.append(f"inventory invalid: {len(self.problems)} error(s); nothing was applied")
        return "\n".join(lines)


# --- reading files -------------------------------------------------------------------------


def _read_yaml(path: Path, who: str, problems: list[Problem]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(str(path), who, "-", "file is missing; expected it in the inventory directory"))
        return None
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), who, "-", f"cannot be read ({e}); expected a UTF-8 YAML file"))
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problems.append(Problem(str(path), who, "-", f"YAML syntax error at {where}: {e.problem or e}"))
        return None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        problems.append(Problem(str(path), who, "-", f"YAML error: {e}"))
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(str(path), who, "-", f"top level is {type(data).__name__}; expected a mapping of fields")
        )
        return None
    return data


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "-"


def _shown(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


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


def _parse(model_cls, data: dict, path: Path, who: str, problems: list[Problem]):
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        problems.extend(_pydantic_problems(path, who, e))
        return None
    except (ValueError, TypeError, RecursionError) as e:  # pragma: no cover - defensive
        problems.append(Problem(str(path), who, "-", f"invalid content: {e}"))
        return None


# --- rules ---------------------------------------------------------------------------------


def _check_standard(std: schema.StandardFile, f: str) -> list[Problem]:
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
            elif val not in zones | known_roles | {"any"}:
                p.append(
                    Problem(
                        f,
                        w,
                        f"allow[{i}].{key}",
                        f"unknown zone or role {val!r}; expected a zone, a role, 'any' or 'zentral:<role>'",
                    )
                )
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


def _check_kommune(k: schema.KommuneFile, slug: str, std: schema.StandardFile, f: str) -> list[Problem]:
    p: list[Problem] = []
    w = slug
    if k.slug != slug:
        p.append(Problem(f, w, "slug", f"{k.slug!r} does not match the file name; expected {slug!r}"))
    if not SLUG.match(slug):
        p.append(Problem(f, w, "slug", f"{slug!r} is not a valid slug; expected lower-case ASCII words joined by '-'"))
    if not re.fullmatch(r"\d{8}", k.ags):
        p.append(
            Problem(
                f, w, "ags", f"{k.ags!r} is not 8 digits; expected the Amtlicher Gemeindeschlüssel, e.g. '10045111'"
            )
        )
    elif not k.ags.startswith(SAARLAND_AGS_PREFIX) or k.ags[2:5] not in SAARLAND_DISTRICTS:
        p.append(
            Problem(
                f,
                w,
                "ags",
                f"{k.ags!r} is not a Saarland code; expected '10' + a Saarland district key ({', '.join(sorted(SAARLAND_DISTRICTS))})",
            )
        )
    elif SAARLAND_DISTRICTS[k.ags[2:5]] != k.district:
        p.append(
            Problem(
                f,
                w,
                "district",
                f"{k.district!r} does not match the AGS district key {k.ags[2:5]}; expected {SAARLAND_DISTRICTS[k.ags[2:5]]!r}",
            )
        )
    if k.population.count < 0:
        p.append(
            Problem(
                f, w, "population.count", f"{k.population.count} is negative; expected a number of inhabitants >= 0"
            )
        )
    if str(k.wave) not in {str(x) for x in std.waves}:
        p.append(Problem(f, w, "wave", f"unknown wave {k.wave!r}; expected one of {[str(x) for x in std.waves]}"))
    if k.size is not None and k.size not in schema.SIZE_CLASSES:
        p.append(Problem(f, w, "size", f"unknown size class {k.size!r}; expected one of {list(schema.SIZE_CLASSES)}"))
    hi = model.max_net_index(std)
    if not 1 <= k.net_index <= hi:
        p.append(
            Problem(
                f,
                w,
                "net_index",
                f"{k.net_index} is out of range; expected 1..{hi} (blocks of /{std.addressing.block_prefix} in {std.addressing.supernet})",
            )
        )
    labels = k.ad_domain.split(".")
    if not (
        k.ad_domain == k.ad_domain.lower()
        and len(labels) >= 2
        and all(DNS_LABEL.match(x) for x in labels)
        and len(k.ad_domain) <= 253
    ):
        p.append(
            Problem(
                f,
                w,
                "ad_domain",
                f"{k.ad_domain!r} is not a valid DNS domain; expected lower-case labels such as '{slug}.{std.services.ad.domain_suffix}'",
            )
        )
    elif labels[-1] == "local":
        p.append(
            Problem(f, w, "ad_domain", "'.local' is reserved for mDNS; expected a domain under the standard's suffix")
        )
    if not NETBIOS.match(k.netbios):
        p.append(
            Problem(
                f,
                w,
                "netbios",
                f"{k.netbios!r} is not a valid NetBIOS domain name; expected 1-15 upper-case letters, digits or '-'",
            )
        )
    seen_host: dict[str, int] = {}
    seen_idx: dict[int, int] = {}
    reserved = {f"{kind}{n}" for kind in std.host_kinds for n in range(1, 10)} | set(std.host_kinds)
    client = std.addressing.zones.get("client")
    for i, ep in enumerate(k.endpoints):
        fld = f"endpoints[{i}]"
        if not HOSTNAME.match(ep.hostname) or len(ep.hostname) > 15:
            p.append(
                Problem(
                    f,
                    w,
                    f"{fld}.hostname",
                    f"{ep.hostname!r} is not a valid hostname; expected 1-15 lower-case letters, digits or '-' (NetBIOS limit)",
                )
            )
        elif ep.hostname in reserved:
            p.append(
                Problem(
                    f,
                    w,
                    f"{fld}.hostname",
                    f"{ep.hostname!r} is reserved for the site's servers; expected another name",
                )
            )
        if ep.hostname in seen_host:
            p.append(
                Problem(
                    f,
                    w,
                    f"{fld}.hostname",
                    f"duplicate endpoint hostname {ep.hostname!r} (also endpoints[{seen_host[ep.hostname]}])",
                )
            )
        seen_host.setdefault(ep.hostname, i)
        if ep.index in seen_idx:
            p.append(
                Problem(
                    f, w, f"{fld}.index", f"duplicate endpoint index {ep.index} (also endpoints[{seen_idx[ep.index]}])"
                )
            )
        seen_idx.setdefault(ep.index, i)
        if client is not None:
            room = 2 ** (32 - client.prefix) - 2 - std.addressing.endpoint_first_host
            if ep.index > room:
                p.append(Problem(f, w, f"{fld}.index", f"{ep.index} does not fit the client zone; expected 1..{room}"))
        if ep.os not in std.endpoints.os:
            p.append(Problem(f, w, f"{fld}.os", f"unknown OS {ep.os!r}; expected one of {std.endpoints.os}"))
    return p


def _check_estate(
    kommunen: dict[str, tuple[schema.KommuneFile, str]], zentral: model.Site | None, std: schema.StandardFile
) -> list[Problem]:
    p: list[Problem] = []
    for fld, key in (
        ("ags", lambda k: k.ags),
        ("net_index", lambda k: k.net_index),
        ("ad_domain", lambda k: k.ad_domain.lower()),
        ("netbios", lambda k: k.netbios.upper()),
        ("name", lambda k: k.name),
    ):
        groups: dict[Any, list[str]] = defaultdict(list)
        for slug, (k, _f) in kommunen.items():
            groups[key(k)].append(slug)
        for value, slugs in groups.items():
            if len(slugs) > 1:
                for slug in slugs:
                    others = ", ".join(s for s in slugs if s != slug)
                    p.append(
                        Problem(
                            kommunen[slug][1],
                            slug,
                            fld,
                            f"duplicate {fld} {value!r} (also used by {others}); expected a unique value",
                        )
                    )
    slugs_seen: dict[str, str] = {}
    for slug, (k, f) in kommunen.items():
        if k.slug in slugs_seen and slugs_seen[k.slug] != slug:
            p.append(Problem(f, slug, "slug", f"duplicate slug {k.slug!r} (also {slugs_seen[k.slug]})"))
        slugs_seen.setdefault(k.slug, slug)
    hi = model.max_net_index(std)
    blocks = {
        slug: model.kommune_block(std, k.net_index) for slug, (k, _f) in kommunen.items() if 1 <= k.net_index <= hi
    }
    if zentral is not None:
        vpn = zentral.zones.get("vpn")
        for slug, (k, f) in kommunen.items():
            if vpn is not None and 1 <= k.net_index <= hi and k.net_index > vpn.network.num_addresses - 2:
                p.append(
                    Problem(
                        f,
                        slug,
                        "net_index",
                        f"{k.net_index} has no tunnel address in the zentral vpn zone {vpn.network}; expected at most {vpn.network.num_addresses - 2}",
                    )
                )
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


# --- entry point ---------------------------------------------------------------------------


def load_estate(inventory: str | Path) -> model.Estate:
    """Read, validate and derive the whole inventory; raise InventoryError with every problem."""
    root = Path(inventory)
    problems: list[Problem] = []
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
    std_path = root / "standard.yaml"
    raw = _read_yaml(std_path, "standard", problems)
    std = _parse(schema.StandardFile, raw, std_path, "standard", problems) if raw is not None else None
    if std is not None:
        problems.extend(_check_standard(std, str(std_path)))
    if problems:
        # Everything else is judged against the standard: stop here with what we know.
        raise InventoryError(problems)

    z_path = root / "zentral.yaml"
    raw = _read_yaml(z_path, "zentral", problems)
    zfile = _parse(schema.ZentralFile, raw, z_path, "zentral", problems) if raw is not None else None
    zentral = None
    if zfile is not None:
        zp = _check_zentral(zfile, std, str(z_path), str(std_path))
        problems.extend(zp)
        if not zp:
            zentral = model.derive_zentral(zfile, std.addressing.gateway_host)

    kdir = root / "kommunen"
    files = sorted(kdir.glob("*.yaml")) if kdir.is_dir() else []
    if not files:
        problems.append(Problem(str(kdir), "-", "-", "no Kommune files found; expected kommunen/<slug>.yaml"))
    kommunen: dict[str, tuple[schema.KommuneFile, str]] = {}
    for path in files:
        slug = path.stem
        raw = _read_yaml(path, slug, problems)
        if raw is None:
            continue
        k = _parse(schema.KommuneFile, raw, path, slug, problems)
        if k is None:
            continue
        kp = _check_kommune(k, slug, std, str(path))
        problems.extend(kp)
        kommunen[slug] = (k, str(path))
    problems.extend(_check_estate(kommunen, zentral, std))
    if problems or zentral is None:
        raise InventoryError(problems)

    sites = {}
    for slug, (k, f) in sorted(kommunen.items()):
        try:
            sites[slug] = model.derive_kommune(std, zentral, k)
        except (ValueError, KeyError) as e:
            problems.append(Problem(f, slug, "-", f"cannot derive the site: {e}"))
    if problems:
        raise InventoryError(problems)
    # Overlaps between derived networks (catches a standard whose zones escape the block).
    nets = [(s.slug, z.name, z.network) for s in [zentral, *sites.values()] for z in s.zones.values()]
    nets.sort(key=lambda t: (int(t[2].network_address), t[2].prefixlen))
    for (s1, z1, n1), (s2, z2, n2) in itertools.pairwise(nets):
        if n1.overlaps(n2) and s1 != s2:
            f = kommunen[s2][1] if s2 in kommunen else str(z_path)
            problems.append(
                Problem(f, s2, f"zones.{z2}", f"{n2} overlaps {s1} zone {z1} ({n1}); expected disjoint networks")
            )
    if problems:
        raise InventoryError(problems)
    return model.Estate(standard=std, zentral=zentral, kommunen=sites, sources={s: kommunen[s][1] for s in sites})


def summary(estate: model.Estate) -> str:
    hosts = len(estate.hosts())
    return f"{len(estate.kommunen)} Kommunen, 1 central site, {hosts} hosts, standard v{estate.standard.version}: valid"
