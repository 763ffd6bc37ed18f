"""Lab names: machines, bridges, veths and cgroups, derived from the model. Pure functions.

Every name a network interface carries must fit the kernel's 15 characters (IFNAMSIZ - 1).
systemd-nspawn names a `--network-bridge` veth `vb-<machine>` and hashes it when the machine
name is longer than 12 characters, so machine names stay at 12 or less. Names derive from the
Kommune's stable `net_index` (never from its slug, which can be long) and carry a lab prefix,
so clean-up can match exact names and two labs with different prefixes never share one.

    machine   bi42-gw, bi42-dc1, bi42-fs1, bi42-ep1     zentral: biz-gw, biz-mgmt, biz-backup
    bridge    bi42-m (management), -s (server), -c (client), -t (transfer)    zentral: biz-m, biz-s
    veth      vb-bi42-dc1 (one-NIC hosts, named by nspawn)
              bi42-gm / -gs / -gc / -gt (the site gateway's NIC per zone, host side)
              biz-t42 (zentral gateway's NIC in Kommune 42's transfer bridge; tr42 inside)
"""

from __future__ import annotations

import os
import re

from basisit import model

PREFIX_ENV = "BASISIT_LAB_PREFIX"
DEFAULT_PREFIX = "bi"
IFNAME_MAX = 15
MACHINE_MAX = 12  # "vb-" + machine must fit IFNAME_MAX without nspawn hashing it
GUEST_SINGLE_NIC = "host0"  # nspawn's name for a --network-bridge NIC inside the guest
VPN_ZONE = "vpn"  # zentral's WireGuard overlay: realised by the VPN roles, not by a bridge

ZONE_LETTERS = {"management": "m", "server": "s", "services": "s", "client": "c", "transfer": "t", "vpn": "v"}

_PREFIX_RE = re.compile(r"^[a-z]{1,3}$")


class LabNameError(ValueError):
    """A lab name would be too long or is not allowed."""


def prefix() -> str:
    """The lab prefix: $BASISIT_LAB_PREFIX or `bi`; one to three lowercase letters."""
    p = os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)
    if not _PREFIX_RE.match(p):
        raise LabNameError(f"{PREFIX_ENV}={p!r} is not a lab prefix; expected one to three lowercase letters (e.g. bi)")
    return p


def site_tag(site: model.Site, pfx: str) -> str:
    """bi42 for the Kommune with net_index 42, biz for zentral."""
    if site.is_zentral:
        return f"{pfx}z"
    assert site.kommune is not None
    return f"{pfx}{site.kommune.net_index}"


def zone_letter(zone: str) -> str:
    return ZONE_LETTERS.get(zone, zone[:1])


def host_suffix(host: model.Host) -> str:
    """gw, dc1, fs1, ep<asset index>; zentral hosts keep their name (mgmt, backup, log)."""
    if host.kind == "ep":
        assert host.asset is not None
        return f"ep{host.asset.index}"
    return host.short


def _check(name: str, limit: int, what: str) -> str:
    if len(name) > limit:
        raise LabNameError(f"lab {what} name {name!r} has {len(name)} characters; the limit is {limit}")
    return name


def machine(site: model.Site, host: model.Host, pfx: str) -> str:
    return _check(f"{site_tag(site, pfx)}-{host_suffix(host)}", MACHINE_MAX, "machine")


def bridge(site: model.Site, zone: str, pfx: str) -> str:
    return _check(f"{site_tag(site, pfx)}-{zone_letter(zone)}", IFNAME_MAX, "bridge")


def single_veth(machine_name: str) -> str:
    """The host side of a --network-bridge veth, as systemd-nspawn names it."""
    return _check(f"vb-{machine_name}", IFNAME_MAX, "veth")


def gateway_veth(site: model.Site, zone: str, pfx: str) -> str:
    return _check(f"{site_tag(site, pfx)}-g{zone_letter(zone)}", IFNAME_MAX, "veth")


def transfer_veth(zentral: model.Site, kommune: model.Site, pfx: str) -> str:
    """Host side of the zentral gateway's NIC in a Kommune's transfer bridge."""
    assert kommune.kommune is not None
    return _check(f"{site_tag(zentral, pfx)}-t{kommune.kommune.net_index}", IFNAME_MAX, "veth")


def transfer_guest_if(kommune: model.Site) -> str:
    """The name of that NIC inside the zentral gateway."""
    assert kommune.kommune is not None
    return _check(f"tr{kommune.kommune.net_index}", IFNAME_MAX, "guest interface")


def cgroup_group(pfx: str) -> str:
    """The cgroup directory (in every hierarchy the lab uses) that holds one cgroup per machine."""
    return f"basisit-lab-{pfx}"
