"""Site facts: the versioned JSON document a realisation backend writes per site.

The schema lives in basisit/schemas/site-facts.v1.json. The lab writes facts after `lab up`; Pulumi
stacks export the same document as their `site_facts` output and `basisit facts import` stores
it. The Ansible inventory plugin reads them from the state directory.

Facts are input: they reach ssh's command line (Ansible's `ansible_ssh_common_args`) and the
ssh_config `basisit verify` writes, so they are checked whenever they are read, not only on
import:

- `validate`: the schema, and `ssh` — `user` a plain login name, key and known-hosts files plain
  absolute paths, `common_args` only `-o Key=Value` options of `SSH_OPTIONS` (the lab's and the
  cloud's; never `ProxyCommand`, `LocalCommand`, `PermitLocalCommand`, `-F`, `-i`, forwarding…);
- `check_against_model`: the site's hosts at the model's addresses, zones as planned,
  `ansible_host` inside the site's planned networks, and `ProxyJump`/`-J` only to the
  estate's management host (`mgmt_host`).

`read(state, slug, estate)` applies both. Every problem names the file and the field.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from basisit import model

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "site-facts.v1.json"
STATE_ENV = "BASISIT_STATE"


class FactsError(Exception):
    """Site facts are missing a field, malformed, or do not match the model."""


_PATH = r"/[A-Za-z0-9._/@+-]+"  # an absolute path: no spaces, quotes, newlines or ssh_config tokens
_NUM = r"[0-9]{1,4}"
# The `-o Key=Value` options site facts may carry (what the lab and the cloud stacks need), with
# the values each may take. Everything else is refused: ProxyCommand/LocalCommand/
# PermitLocalCommand run commands on the control host, and others (-F, -i, -L/-R/-D, -W, -E …)
# change where ssh connects, what it forwards or what it reads.
SSH_OPTIONS = {
    "IdentitiesOnly": r"yes",
    "UserKnownHostsFile": _PATH,
    "StrictHostKeyChecking": r"yes",
    "ServerAliveInterval": _NUM,
    "ServerAliveCountMax": _NUM,
    "ConnectTimeout": _NUM,
    "ConnectionAttempts": r"[0-9]{1,2}",
    "ProxyJump": r"([a-z_][a-z0-9_-]*@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?",  # only the management host: see check_against_model
}
_CANON = {k.lower(): k for k in SSH_OPTIONS}


def ssh_options(common_args: str) -> list[tuple[str, str]]:
    """The (Key, Value) options of an `ssh.common_args` string; FactsError for anything not allowed.

    `-o Key=Value`, `-oKey=Value` and `-J host` (= ProxyJump) are understood; keys are matched
    case-insensitively (as ssh does) and returned in their canonical spelling.
    """
    try:
        words = shlex.split(common_args or "")
    except ValueError as e:
        raise FactsError(f"cannot be split into arguments ({e})") from None
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-o", "-J"):
            if i + 1 >= len(words):
                raise FactsError(f"{w} without a value")
            opt, i = (words[i + 1] if w == "-o" else f"ProxyJump={words[i + 1]}"), i + 2
        elif w.startswith("-o") and len(w) > 2:
            opt, i = w[2:], i + 1
        elif w.startswith("-J") and len(w) > 2:
            opt, i = f"ProxyJump={w[2:]}", i + 1
        else:
            raise FactsError(f"{w!r} is not allowed (only -o Key=Value with a key of {', '.join(SSH_OPTIONS)})")
        key, eq, value = opt.partition("=")
        key = key.strip()
        if not eq:
            raise FactsError(f"-o {opt!r}: expected Key=Value")
        canon = _CANON.get(key.lower())
        if canon is None:
            raise FactsError(f"option {key} is not allowed (allowed: {', '.join(SSH_OPTIONS)})")
        if not re.fullmatch(SSH_OPTIONS[canon], value):
            raise FactsError(f"option {canon}={value!r}: not an allowed value")
        out.append((canon, value))
    return out


def _check_ssh(doc: dict, source: str) -> None:
    ssh = doc.get("ssh")
    if not isinstance(ssh, dict) or not isinstance(ssh.get("common_args", ""), str):
        return  # the schema reports it
    try:
        ssh_options(ssh.get("common_args", ""))
    except FactsError as e:
        raise FactsError(f"{source}: ssh/common_args: {e}") from None


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
    _check_ssh(doc, source)


def jump_hosts(estate: model.Estate | None) -> set[str]:
    """What ProxyJump may name: the estate's management host(s), by name, FQDN or address."""
    if estate is None:
        return set()
    out: set[str] = set()
    for h in estate.zentral.hosts_with_role("mgmt_host"):
        out |= {h.name, h.fqdn, *(str(a) for a in h.addresses.values())}
    return out


def check_against_model(
    doc: dict, site: model.Site, source: str = "site facts", estate: model.Estate | None = None
) -> None:
    """Facts must describe the model's hosts at the model's addresses (realisation may add none):
    zones as planned, `ansible_host` inside the site's planned networks, and a ProxyJump only to
    the estate's management host (none at all without `estate`)."""
    problems = []
    if doc.get("site") != site.slug:
        problems.append(f"site is {doc.get('site')!r}; expected {site.slug!r}")
    nets = [z.network for z in site.zones.values()]
    for zone, cidr in doc.get("zones", {}).items():
        want = site.zones.get(zone)
        if want is None or str(want.network) != cidr:
            problems.append(f"zones/{zone}: {cidr} differs from the model ({want.network if want else None})")
    planned = {h.name: h for h in site.hosts}
    for name, h in doc.get("hosts", {}).items():
        if name not in planned:
            problems.append(f"hosts/{name}: not a host of {site.slug} in the model")
            continue
        for zone, addr in h.get("addresses", {}).items():
            want = planned[name].addresses.get(zone)
            if want is None or str(want) != addr:
                problems.append(f"hosts/{name}/addresses/{zone}: {addr} differs from the model ({want})")
        target = h.get("ansible_host", "")
        try:
            ip = ipaddress.IPv4Address(target)
        except ValueError:
            problems.append(f"hosts/{name}/ansible_host: {target!r} is not an IPv4 address")
            continue
        if not any(ip in n for n in nets):
            problems.append(
                f"hosts/{name}/ansible_host: {ip} lies outside {site.slug}'s planned networks "
                f"({', '.join(str(n) for n in nets)})"
            )
    ssh = doc.get("ssh") or {}
    allowed = jump_hosts(estate)
    try:
        opts = ssh_options(ssh.get("common_args", ""))
    except FactsError as e:
        problems.append(f"ssh/common_args: {e}")
        opts = []
    for key, value in opts:
        if key == "ProxyJump":
            host = value.rpartition("@")[2].split(":", 1)[0]
            if host not in allowed:
                problems.append(
                    f"ssh/common_args: ProxyJump {value!r} is not the estate's management host"
                    + (f" ({', '.join(sorted(allowed))})" if allowed else "")
                )
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


def read(state: Path, slug: str, estate: model.Estate | None = None) -> dict | None:
    """The facts of a site, or None when none were written. Raises FactsError when broken.

    With `estate`, the facts are also checked against the model (check_against_model): a facts
    file edited in the state directory is refused as an import would be.
    """
    path = facts_path(state, slug)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FactsError(f"{path}: cannot be read as JSON ({e})") from e
    validate(doc, str(path))
    if estate is not None:
        check_against_model(doc, estate.site(slug), str(path), estate)
    return doc


def remove(state: Path, slug: str) -> None:
    facts_path(state, slug).unlink(missing_ok=True)


def realised_sites(state: Path, estate: model.Estate, sites: list[str], named: set[str]) -> tuple[list[str], list[str]]:
    """(realised, left out) of `sites` for a run over them.

    A site without facts is left out, unless the operator named it (`--kommune`, `--zentral`) or no
    selected site is realised at all: then the run cannot mean anything and FactsError says how to
    bring the site up.
    """
    unrealised = [s for s in sites if read(state, s, estate) is None]
    if unrealised and (set(unrealised) & named or len(unrealised) == len(sites)):
        bad = [s for s in unrealised if s in named] or unrealised
        raise FactsError(
            f"{', '.join(bad)}: not realised (no site facts in {facts_dir(state)}); "
            "bring it up with `basisit lab up --kommune SLUG` or import a stack's facts with `basisit facts import`"
        )
    return [s for s in sites if s not in unrealised], unrealised
