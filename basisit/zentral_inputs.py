"""What zentral's converge is made of, as one digest.

`basisit rollout` skips zentral's converge while this digest is the one its ledger recorded after
zentral's last good converge (basisit.rollout). Zentral's configuration depends on the whole
estate (the VPN hub has a peer per Kommune, the backup server a user per Kommune with backup
clients, the log host a sender per gateway, its firewall flows walk every Kommune), so the digest
covers, as SHA-256 over a canonical JSON document:

- the model data zentral's roles consume: the standard; zentral's site and hosts; for each
  zentral host every value the lookup `basisit_model` computes (firewall rule sets, VPN peers,
  log senders: basisit.derived.VALUES); the roster of sites with backup clients (what
  backup_server and backup_retention read through `groups['backup_client']`);
- the inventory's group_vars/ and host_vars/ (applied to zentral's hosts as well);
- zentral's site facts (without their timestamp) and the SSH host keys of its hosts in the lab's
  known_hosts: a host built anew has a new key, so a re-created zentral is converged again;
- the secrets zentral applies: every file of the state's secrets/ outside a Kommune's directory
  (zentral's own), and of each Kommune's the files zentral's roles read (KOMMUNE_SECRETS) — by
  a digest of their (encrypted) content, never the content;
- the code: roles/, playbooks/, plugins/, the basisit package and ansible.cfg.

A Kommune file edit that changes none of this (an endpoint added, a population updated) keeps
zentral current; a new Kommune, a rotated WireGuard key or a changed role does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from basisit import derived
from basisit.model import Estate

ROOT = Path(__file__).resolve().parent.parent
# Files of a Kommune's secrets directory that zentral's roles read (vpn_hub: the peer's public
# key; backup_server: its REST user; backup_retention: its repository password, and the old one
# while a rotation is pending). tests/unit/test_zentral_inputs.py checks this against every
# role's per-site secret paths.
KOMMUNE_SECRETS = ("wireguard.key", "restic-rest", "restic-repository", "restic-repository.previous")
CODE = ("roles", "playbooks", "plugins", "basisit", "ansible.cfg")
# The rosters zentral's roles read from groups: role -> sites that have a host with that role.
ROSTER_ROLES = ("backup_client",)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_data(estate: Estate) -> dict:
    """The model data zentral's roles consume (see the module docstring)."""
    z = estate.zentral
    hosts = {
        h.name: {"host": h.to_dict(), **{name: fn(estate, h) for name, (_, fn) in sorted(derived.VALUES.items())}}
        for h in z.hosts
    }
    rosters = {
        role: sorted({h.site for h in estate.hosts() if role in h.roles and h.site != z.slug}) for role in ROSTER_ROLES
    }
    return {
        "standard": estate.standard.model_dump(mode="json", by_alias=True),
        "zentral": z.to_dict(),
        "hosts": hosts,
        "rosters": rosters,
    }


def _facts(state: Path, slug: str) -> dict | None:
    path = state / "facts" / f"{slug}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None if not path.exists() else {"unreadable": _sha(path.read_bytes())}
    return {k: v for k, v in doc.items() if k != "generated"} if isinstance(doc, dict) else {"doc": doc}


def _host_keys(facts: dict | None, estate: Estate) -> list[str]:
    """The known_hosts lines of zentral's hosts (by name or address)."""
    if not facts:
        return []
    kh = (facts.get("ssh") or {}).get("known_hosts_file")
    if not kh or not Path(kh).is_file():
        return []
    names = {h.name for h in estate.zentral.hosts}
    names |= {str(h.address) for h in estate.zentral.hosts}
    names |= {str(v.get("ansible_host")) for v in (facts.get("hosts") or {}).values() if isinstance(v, dict)}
    out = []
    for line in Path(kh).read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and names & set(fields[0].split(",")):
            out.append(" ".join(fields[:3]))
    return sorted(out)


def secrets(state: Path, estate: Estate) -> dict[str, str]:
    """{path under secrets/: digest of its content} of the secrets zentral applies."""
    base = state / "secrets"
    out = {}
    for f in _files(base):
        rel = f.relative_to(base)
        if rel.parts[0] in estate.retired:
            continue  # a retired Kommune's (kept to read its backups): zentral no longer applies any
        if rel.parts[0] in estate.kommunen and rel.name not in KOMMUNE_SECRETS:
            continue  # a Kommune's own (AD administrator, probe, ...): zentral never reads it
        out[str(rel)] = _sha(f.read_bytes())
    return out


def code(root: Path = ROOT) -> dict[str, str]:
    return {str(f.relative_to(root)): _sha(f.read_bytes()) for c in CODE for f in _files(root / c)}


def document(estate: Estate, inventory: Path, state: Path, root: Path = ROOT) -> dict:
    """Everything the digest is taken over."""
    facts = _facts(state, estate.zentral.slug)
    vars_files = {
        str(f.relative_to(inventory)): _sha(f.read_bytes())
        for d in ("group_vars", "host_vars")
        for f in _files(inventory / d)
    }
    return {
        "model": model_data(estate),
        "vars": vars_files,
        "facts": facts,
        "host_keys": _host_keys(facts, estate),
        "secrets": secrets(state, estate),
        "code": code(root),
    }


def digest(estate: Estate, inventory: Path, state: Path, root: Path = ROOT) -> str:
    """The SHA-256 of `document`, canonical JSON (sorted keys; addresses as strings)."""
    doc = document(estate, inventory, state, root)
    return _sha(json.dumps(doc, sort_keys=True, default=str, separators=(",", ":")).encode())
