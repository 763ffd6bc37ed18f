"""What a site's tenant consists of, as plain data: networks, security groups, ports, volumes.

Pure functions of the model (and the stack config); the Pulumi components in
basisit.cloud.components only turn this plan into resources, and the unit tests check the
recorded resources against it and against basisit.policy.

Security groups come from basisit.policy: for every server the rules of the security groups on
its ports are exactly the flows that reach it (`policy.inbound`), keyed by source, protocol and
port (security group rules cannot name a destination). Rules every server needs go into the
site group `<slug>-sg-site`; rules every host of a role needs into `<slug>-sg-<role>`; anything
left (a rule that reaches only some hosts of a role) into `<host>-sg`. The router roles
(gateway, zentral_gateway) also admit what they forward (`policy.transit`); their nftables
policy decides per destination. The site group carries the one egress rule; all groups are
created with Neutron's default rules deleted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from basisit import policy
from basisit.cloud.config import servers
from basisit.model import Estate, Host, Site

ROUTER_ROLES = ("gateway", "zentral_gateway")
# Zones that are not Neutron networks: zentral's `vpn` is the WireGuard overlay inside the tunnels.
OVERLAY_ZONES = ("vpn",)
# Zones whose hosts get their address from the gateway's DHCP, not Neutron's.
NO_NEUTRON_DHCP = ("client",)

Key = tuple[str, int, ipaddress.IPv4Network]  # (proto, port, remote prefix)


@dataclass(frozen=True, order=True)
class SgRule:
    proto: str
    port: int
    remote: ipaddress.IPv4Network
    rules: tuple[str, ...]  # the allow rules it realises

    @property
    def key(self) -> Key:
        return (self.proto, self.port, self.remote)


@dataclass(frozen=True)
class SecurityGroup:
    name: str  # physical and logical name, e.g. bexbach-sg-ad_dc
    description: str
    rules: tuple[SgRule, ...]
    egress: bool = False  # carries the one egress-to-anywhere rule


@dataclass(frozen=True)
class ZonePlan:
    name: str
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    dhcp: bool
    pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]  # Neutron's own ports (DHCP, ...)


@dataclass(frozen=True)
class PortPlan:
    name: str
    host: str
    zone: str
    address: ipaddress.IPv4Address
    security_groups: tuple[str, ...]
    allowed_address_pairs: tuple[ipaddress.IPv4Network, ...] = ()


@dataclass(frozen=True)
class SitePlan:
    site: Site
    zones: tuple[ZonePlan, ...]
    router_zone: str
    router_address: ipaddress.IPv4Address
    security_groups: tuple[SecurityGroup, ...]
    ports: tuple[PortPlan, ...]
    host_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host -> SG names

    def zone(self, name: str) -> ZonePlan:
        return next(z for z in self.zones if z.name == name)

    def group(self, name: str) -> SecurityGroup:
        return next(g for g in self.security_groups if g.name == name)

    @property
    def rule_count(self) -> int:
        return sum(len(g.rules) + (1 if g.egress else 0) for g in self.security_groups)


def neutron_pool(net: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """Neutron's allocation pool: the upper quarter of the zone, short of the last usable address."""
    first = net.network_address + net.num_addresses * 3 // 4
    last = net.broadcast_address - 2
    return first, last


def router_address(site: Site) -> tuple[str, ipaddress.IPv4Address]:
    """Where the tenant's Neutron router (the uplink to the external network) sits.

    Kommune: the transfer zone's .1 (the model's upstream next hop; the site gateway is .2).
    Zentral: the last usable address of its management zone (the zentral gateway holds every .1).
    """
    if site.is_zentral:
        z = site.zones["management"]
        return "management", z.network.broadcast_address - 1
    z = site.zones["transfer"]
    assert z.gateway is not None
    return "transfer", z.gateway


def _keys(flows: list[policy.Flow]) -> dict[Key, set[str]]:
    out: dict[Key, set[str]] = {}
    for f in flows:
        out.setdefault((f.proto, f.port, f.src), set()).add(f.rule)
    return out


def _rules(keys: set[Key], names: dict[Key, set[str]]) -> tuple[SgRule, ...]:
    return tuple(sorted(SgRule(p, port, remote, tuple(sorted(names[(p, port, remote)]))) for p, port, remote in keys))


def required(estate: Estate, site: Site, host: Host) -> set[Key]:
    """What a server's security groups must admit: its inbound flows, plus transit for a router."""
    flows = policy.inbound(estate, host)
    if any(r in ROUTER_ROLES for r in host.roles):
        flows += policy.transit(estate, site)
    return set(_keys(flows))


def security_groups(estate: Estate, site: Site) -> tuple[tuple[SecurityGroup, ...], dict[str, tuple[str, ...]]]:
    hosts = servers(site)
    all_flows = policy.flows(estate, site) + policy.transit(estate, site)
    names = _keys(all_flows)
    need = {h.name: required(estate, site, h) for h in hosts}
    common = set.intersection(*need.values()) if need else set()
    groups = [
        SecurityGroup(
            f"{site.slug}-sg-site",
            f"{site.slug}: flows every server admits; egress",
            _rules(common, names),
            egress=True,
        )
    ]
    covered = {h.name: set(common) for h in hosts}
    host_groups: dict[str, list[str]] = {h.name: [groups[0].name] for h in hosts}
    for role in sorted({r for h in hosts for r in h.roles}):
        members = [h for h in hosts if role in h.roles]
        keys = set.intersection(*(need[h.name] for h in members)) - common
        g = SecurityGroup(f"{site.slug}-sg-{role}", f"{site.slug}: flows to role {role} (basisit.policy)", _rules(keys, names))
        groups.append(g)
        for h in members:
            covered[h.name] |= keys
            host_groups[h.name].append(g.name)
    for h in hosts:
        rest = need[h.name] - covered[h.name]
        if rest:
            g = SecurityGroup(f"{h.name}-sg", f"{h.name}: flows only this host admits", _rules(rest, names))
            groups.append(g)
            host_groups[h.name].append(g.name)
    return tuple(groups), {k: tuple(v) for k, v in host_groups.items()}


def build(estate: Estate, site: Site) -> SitePlan:
    rzone, raddr = router_address(site)
    zones = []
    for z in site.zones.values():
        if z.name in OVERLAY_ZONES:
            continue
        zones.append(
            ZonePlan(
                name=z.name,
                network=z.network,
                gateway=z.gateway,
                dhcp=z.name not in NO_NEUTRON_DHCP,
                pool=neutron_pool(z.network),
            )
        )
    groups, host_groups = security_groups(estate, site)
    supernet = estate.standard.addressing.supernet
    ports = []
    realised = {z.name for z in zones}
    for h in servers(site):
        router = any(r in ROUTER_ROLES for r in h.roles)
        order = [h.primary_zone, *(z for z in h.addresses if z != h.primary_zone)]
        for zname in order:
            if zname not in realised:
                continue
            ports.append(
                PortPlan(
                    name=f"{h.name}-{zname}",
                    host=h.name,
                    zone=zname,
                    address=h.addresses[zname],
                    security_groups=host_groups[h.name],
                    # A router forwards packets with other sources: allow the Land supernet, never 0.0.0.0/0.
                    allowed_address_pairs=(supernet,) if router else (),
                )
            )
    return SitePlan(
        site=site,
        zones=tuple(zones),
        router_zone=rzone,
        router_address=raddr,
        security_groups=groups,
        ports=tuple(ports),
        host_groups=host_groups,
    )
