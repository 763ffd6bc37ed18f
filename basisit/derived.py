"""Derived data a role needs, computed from the model on the control host when it is asked for.

The large derived values (a gateway's forward rule set, the VPN hub's peers) are not copied into
every host's inventory variables; the lookup `basisit_model` (plugins/lookup/basisit_model.py)
asks this module for them. The estate is loaded once per process and kept, keyed on the
inventory directory and the size and modification time of each file in it, so an edited file is
read again. The inventory plugin hands over the estate it has just loaded (`remember`), so the
playbook's worker processes, forked from the controller, find it already in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from basisit import policy
from basisit.model import Estate, Host
from basisit.validate import load_estate

# name -> (what it is, how it is computed from the estate and a host)
VALUES: dict[str, tuple[str, Callable[[Estate, Host], object]]] = {
    "firewall_inbound": ("the host's input rule set", policy.inbound_rules),
    "firewall_outbound": ("what the host may open, per rule, protocol and destination", policy.outbound_rules),
    "firewall_outbound_rules": (
        "the names of the rules the host may open connections under",
        policy.outbound_rule_names,
    ),
    "firewall_forward": ("a site router's forward rule set ([] for other hosts)", policy.forward_rules),
    "vpn_peers": ("the VPN hub's WireGuard peers ([] for other hosts)", policy.vpn_peers),
    "package_proxy": (
        "where the host's apt fetches: the package proxy's url, port, rules, listen",
        policy.package_proxy,
    ),
    "vpn_networks": ("what a Kommune gateway routes into its tunnel ([] for other hosts)", policy.vpn_networks),
    "firewall_underlay": (
        "a site router's rules for its transfer (underlay) interfaces per hook ({} for other hosts)",
        policy.underlay_rules,
    ),
    "log_senders": ("a log host's senders, address -> host name ({} for other hosts)", policy.log_senders),
    "retired_kommunen": (
        "the Kommunen retired from the estate, whose backups zentral keeps read-only ([] for other hosts)",
        lambda estate, host: sorted(estate.retired) if "backup_server" in host.roles else [],
    ),
}

_ESTATES: dict[str, tuple[tuple, Estate]] = {}
_VALUES: dict[tuple[str, tuple, str, str], object] = {}


class UnknownValue(LookupError):
    """A name or host the model does not have."""


def stamp(inv_dir: str | Path) -> tuple:
    """(name, size, mtime) of every entry of the inventory directory and of kommunen/: changes
    whenever a file the estate is read from changes."""
    out = []
    for d in (Path(inv_dir), Path(inv_dir) / "kommunen"):
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in sorted(entries, key=lambda e: e.name):
            st = e.stat()
            out.append((str(d), e.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def remember(inv_dir: str | Path, estate: Estate) -> None:
    """Keep an estate just loaded from `inv_dir` (by the inventory plugin) for later lookups."""
    key = os.path.abspath(inv_dir)
    _ESTATES[key] = (stamp(key), estate)


def estate(inv_dir: str | Path) -> tuple[tuple, Estate]:
    """The estate of `inv_dir` and its stamp: from memory when no file changed, else loaded
    (raises basisit.validate.InventoryError for an invalid inventory)."""
    key = os.path.abspath(inv_dir)
    now = stamp(key)
    hit = _ESTATES.get(key)
    if hit is not None and hit[0] == now:
        return hit
    _ESTATES[key] = (now, load_estate(key))
    return _ESTATES[key]


def value(inv_dir: str | Path, name: str, host: str) -> object:
    """The derived value `name` for the host named `host` (its inventory name)."""
    if name not in VALUES:
        raise UnknownValue(f"unknown value {name!r}; known: {', '.join(sorted(VALUES))}")
    key = os.path.abspath(inv_dir)
    st, est = estate(key)
    cache_key = (key, st, name, host)
    if cache_key not in _VALUES:
        found = next((h for h in est.hosts() if h.name == host), None)
        if found is None:
            raise UnknownValue(f"host {host!r} is not in the inventory {key}")
        if len(_VALUES) > 4096:
            _VALUES.clear()
        _VALUES[cache_key] = VALUES[name][1](est, found)
    return _VALUES[cache_key]
