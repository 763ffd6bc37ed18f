"""What the lab builds for a site: machines, NICs, bridges, routes and guest files. Pure functions.

Topology (docs/lab.md):

- one bridge per zone per site (zentral's `vpn` zone is the WireGuard overlay, no bridge);
- the site gateway has one NIC per zone and forwards; every other host has one NIC on its zone's
  bridge with the site gateway as its default route;
- a Kommune's transfer bridge holds its gateway (.2) and a NIC of the zentral gateway (.1);
  the Kommune gateway routes only zentral's networks to .1 (no default route), the zentral
  gateway routes each Kommune block to that Kommune's .2, so Kommunen have no path to each other;
- the control host has one address on zentral's management bridge (the last usable one) and
  routes the Land supernet via the zentral gateway, so SSH takes the real path through the routers.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from basisit import model
from basisit.lab import names


@dataclass(frozen=True)
class Nic:
    zone: str
    bridge: str
    host_if: str  # host side of the veth
    guest_if: str  # name inside the guest
    address: ipaddress.IPv4Interface
    default_gateway: ipaddress.IPv4Address | None = None
    routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...] = ()


@dataclass(frozen=True)
class HostPlan:
    site: str
    host: model.Host
    machine: str
    nics: tuple[Nic, ...]
    router: bool  # the site gateway: one NIC per zone (veth-extra), forwarding on
    nameserver: ipaddress.IPv4Address

    @property
    def name(self) -> str:
        return self.host.name


@dataclass(frozen=True)
class SitePlan:
    site: model.Site
    tag: str
    bridges: dict[str, str]  # zone -> bridge name
    hosts: tuple[HostPlan, ...]

    @property
    def slug(self) -> str:
        return self.site.slug


def lab_hosts(estate: model.Estate, site: model.Site) -> list[model.Host]:
    """The hosts the lab realises: every non-endpoint host plus the standard's endpoint cap."""
    eps = {h.name for h in model.lab_endpoints(estate.standard, site)}
    return [h for h in site.hosts if h.kind != "ep" or h.name in eps]


def _iface(net: ipaddress.IPv4Network, addr: ipaddress.IPv4Address) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{addr}/{net.prefixlen}")


def site_plan(estate: model.Estate, site: model.Site, pfx: str) -> SitePlan:
    bridges = {z: names.bridge(site, z, pfx) for z in site.zones if z != names.VPN_ZONE}
    zentral = estate.zentral
    hosts: list[HostPlan] = []
    for h in lab_hosts(estate, site):
        machine = names.machine(site, h, pfx)
        if h.kind == "gw":
            nics = []
            for zone, addr in h.addresses.items():
                if zone == names.VPN_ZONE:
                    continue
                z = site.zones[zone]
                routes: tuple = ()
                if zone == "transfer" and not site.is_zentral:
                    # only zentral's networks, via zentral's router: no default route, no other Kommune
                    assert z.gateway is not None
                    routes = tuple((zz.network, z.gateway) for zz in zentral.zones.values())
                nics.append(
                    Nic(
                        zone,
                        bridges[zone],
                        names.gateway_veth(site, zone, pfx),
                        zone,
                        _iface(z.network, addr),
                        None,
                        routes,
                    )
                )
            hosts.append(HostPlan(site.slug, h, machine, tuple(nics), True, ipaddress.IPv4Address("127.0.0.1")))
        else:
            zone = h.primary_zone
            z = site.zones[zone]
            assert z.gateway is not None
            nic = Nic(
                zone,
                bridges[zone],
                names.single_veth(machine),
                names.GUEST_SINGLE_NIC,
                _iface(z.network, h.address),
                z.gateway,
            )
            hosts.append(HostPlan(site.slug, h, machine, (nic,), False, z.gateway))
    return SitePlan(site, names.site_tag(site, pfx), bridges, tuple(hosts))


def transfer_nic(estate: model.Estate, kommune: model.Site, pfx: str) -> Nic:
    """The zentral gateway's NIC in a Kommune's transfer bridge: .1, routing the block via .2."""
    z = kommune.zones["transfer"]
    assert z.gateway is not None and kommune.block is not None
    kgw = next(h for h in kommune.hosts if h.kind == "gw")
    return Nic(
        "transfer",
        names.bridge(kommune, "transfer", pfx),
        names.transfer_veth(estate.zentral, kommune, pfx),
        names.transfer_guest_if(kommune),
        _iface(z.network, z.gateway),
        None,
        ((kommune.block, kgw.addresses["transfer"]),),
    )


def control_address(estate: model.Estate) -> ipaddress.IPv4Interface:
    """The control host's address on zentral's management bridge: its last usable address."""
    net = estate.zentral.zones["management"].network
    return ipaddress.IPv4Interface(f"{net.broadcast_address - 1}/{net.prefixlen}")


def control_gateway(estate: model.Estate) -> ipaddress.IPv4Address:
    gw = estate.zentral.zones["management"].gateway
    assert gw is not None
    return gw


def supernet(estate: model.Estate) -> ipaddress.IPv4Network:
    return estate.standard.addressing.supernet


# --- guest files -----------------------------------------------------------------------------


# The transfer link's routes (a Kommune gateway to zentral's networks, zentral's gateway to a
# Kommune's block) are the underlay: the tunnel's routes (metric 0, installed by the gateway's
# wg-quick and the hub's route keeper) win over them. They carry a site's traffic only before its
# tunnel exists (and while it is down), when the routers' underlay chains admit nothing but the
# tunnel and the SSH that builds or repairs it.
UNDERLAY_METRIC = 4000


def networkd_file(nic: Nic, forward: bool) -> str:
    lines = [
        "# written by basisit lab",
        "[Match]",
        f"Name={nic.guest_if}",
        "",
        "[Link]",
        # Every lab NIC has a static address: "routable" lets systemd-networkd-wait-online (pulled
        # in by units that want network-online.target) return at once instead of timing out.
        "RequiredForOnline=routable",
        "",
        "[Network]",
        f"Address={nic.address}",
    ]
    if nic.default_gateway:
        lines.append(f"Gateway={nic.default_gateway}")
    if forward:
        lines.append("IPForward=ipv4")
    lines += ["LinkLocalAddressing=no", "IPv6AcceptRA=no", "ConfigureWithoutCarrier=yes"]
    for dest, via in nic.routes:
        lines += ["", "[Route]", f"Destination={dest}", f"Gateway={via}", f"Metric={UNDERLAY_METRIC}"]
    return "\n".join(lines) + "\n"


def networkd_name(nic: Nic) -> str:
    return f"10-basisit-{nic.guest_if}.network"


# Guest files the roles take over after the first boot: written into a new overlay only, so a
# restarted host keeps what the roles made of them (a converged host stays converged).
SEED_ONLY = frozenset({"etc/resolv.conf"})


def guest_files(hp: HostPlan) -> dict[str, str]:
    """Files (path relative to the guest's root -> content) written before first boot, host keys aside."""
    h = hp.host
    files = {
        "etc/hostname": f"{h.short}\n",
        "etc/hosts": (
            "127.0.0.1\tlocalhost\n"
            f"{h.address}\t{h.fqdn} {h.short}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
        "etc/resolv.conf": f"# written by basisit lab up; the roles manage it\nnameserver {hp.nameserver}\n",
    }
    domain = h.fqdn.partition(".")[2]
    if domain:
        files["etc/resolv.conf"] += f"search {domain}\n"
    for nic in hp.nics:
        files[f"etc/systemd/network/{networkd_name(nic)}"] = networkd_file(nic, hp.router)
    return files


# The package upstream: the forwarder on the control host that zentral's package proxy uses (its
# cgroup <cgroup group>/aptproxy, its record <state>/lab/aptproxy.json; basisit.lab.lab starts it).
UPSTREAM_NAME = "aptproxy"
UPSTREAM_PORT = 3128


def upstream_record_path(state: Path) -> Path:
    return Path(state) / "lab" / f"{UPSTREAM_NAME}.json"


def upstream_record(state: Path) -> dict | None:
    """What `lab up` started: {pid, listen, url, peers, allow, mirror, security_mirror}, or None."""
    try:
        return json.loads(upstream_record_path(state).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
