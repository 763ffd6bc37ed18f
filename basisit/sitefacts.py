"""Site facts: the versioned JSON document a realisation backend writes per site.

The schema lives in basisit/schemas/site-facts.v1.json. The lab writes facts after `lab up`; Pulumi
stacks export the same document as their `site_facts` output and `basisit facts import` stores
it. The Ansible inventory plugin reads them from the state directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from basisit import model

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "site-facts.v1.json"
STATE_ENV = "BASISIT_STATE"


class FactsError(Exception):
    """Site facts are missing a field, malformed, or do not match the model."""


def state_dir(explicit: str | Path | None = None) -> Path:
    """The runtime state directory: --state, else $BASISIT_STATE, else ./.basisit."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(STATE_ENV)
    return Path(env) if env else Path.cwd() / ".basisit"


def facts_dir(state: Path) -> Path:
    return state / "facts"


def facts_path(state: Path, slug: str) -> Path:
    return facts_dir(state) / f"{slug}.json"


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(doc: Any, source: str = "site facts") -> None:
    """Raise FactsError naming every schema violation."""
    v = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: {'/'.join(map(str, e.absolute_path)) or '-'}: {e.message}" for e in errors]
        raise FactsError("\n".join(lines))


def check_against_model(doc: dict, site: model.Site, source: str = "site facts") -> None:
    """Facts must describe the model's hosts at the model's addresses (realisation may add none)."""
    problems = []
    if doc.get("site") != site.slug:
        problems.append(f"site is {doc.get('site')!r}; expected {site.slug!r}")
    planned = {h.name: h for h in site.hosts}
    for name, h in doc.get("hosts", {}).items():
        if name not in planned:
            problems.append(f"hosts/{name}: not a host of {site.slug} in the model")
            continue
        for zone, addr in h.get("addresses", {}).items():
            want = planned[name].addresses.get(zone)
            if want is None or str(want) != addr:
                problems.append(f"hosts/{name}/addresses/{zone}: {addr} differs from the model ({want})")
    if problems:
        raise FactsError("\n".join(f"{source}: {p}" for p in problems))


def build(
    site: model.Site, backend: str, standard_version: int, hosts: dict[str, dict], ssh: dict | None = None
) -> dict:
    doc: dict[str, Any] = {
        "schema": "basisit/site-facts",
        "version": 1,
        "site": site.slug,
        "backend": backend,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "standard_version": standard_version,
        "zones": {n: str(z.network) for n, z in site.zones.items()},
        "hosts": hosts,
    }
    if ssh:
        doc["ssh"] = ssh
    validate(doc)
    return doc


def write(state: Path, doc: dict) -> Path:
    """Validate and write atomically (mode 0600: facts name key files)."""
    validate(doc)
    path = facts_path(state, doc["site"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def read(state: Path, slug: str) -> dict | None:
    """The facts of a site, or None when none were written. Raises FactsError when broken."""
    path = facts_path(state, slug)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FactsError(f"{path}: cannot be read as JSON ({e})") from e
    validate(doc, str(path))
    return doc


def remove(state: Path, slug: str) -> None:
    facts_path(state, slug).unlink(missing_ok=True)
