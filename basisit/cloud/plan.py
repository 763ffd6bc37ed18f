"""What a site's tenant consists of, as plain data: networks, security groups, ports, volumes.

Pure functions of the model (and the stack config); the Pulumi components in
basisit.cloud.components only turn this plan into resources, and the unit tests check the
recorded resources against it and against basisit.policy.

Security groups come from basisit.policy: for every server the rules of the security groups on
its ports are the flows that reach it (`policy.inbound`), keyed by source, protocol and port
(security group rules cannot name a destination). A flow lands in the group of the role its
allow rule targets (`<slug>-sg-<role>`), rules to `any` in the site group `<slug>-sg-site`,
anything else (a rule to a zone) in a host group `<host>-sg`. The router roles (gateway,
zentral_gateway) also admit what they forward (`policy.transit`); their nftables policy decides
per destination. The site group carries the one egress rule; all groups are created with
Neutron's default rules deleted.

A Kommune gateway's port on the transfer network (the tunnel's underlay) carries one group of its
own, `<gw>-sg-transfer`: ingress the underlay flows that reach the gateway, egress the underlay
flows it opens (udp/51820 to the hub), nothing else (`policy.underlay_flows`); everything between
the site and zentral travels inside the tunnel and never meets a security group in clear.
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
    egress_rules: tuple[SgRule, ...] = ()  # egress to these destinations only (remote = destination)


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
        return sum(len(g.rules) + len(g.egress_rules) + (1 if g.egress else 0) for g in self.security_groups)


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
    if _router(host):
        flows += policy.transit(estate, site)
    # the router's own traffic (gateway-log from its management address) never enters its ports
    own = {ipaddress.IPv4Network((int(a), 32)) for a in host.addresses.values()}
    return {k for k in _keys(flows) if k[2] not in own}


def transfer_group(host: Host) -> str | None:
    """The group of a Kommune gateway's transfer port; None for a host without one."""
    return f"{host.name}-sg-transfer" if "gateway" in host.roles and "transfer" in host.addresses else None


def transfer_required(estate: Estate, site: Site, host: Host) -> set[Key]:
    """What a gateway's transfer port admits: the underlay flows that reach the host."""
    return {(f.proto, f.port, f.src) for f in policy.underlay_flows(estate, site) if host.name in f.dst_hosts}


def transfer_egress(estate: Estate, site: Site, host: Host) -> set[Key]:
    """What a gateway's transfer port may send (remote = destination): the underlay flows it opens."""
    return {(f.proto, f.port, f.dst) for f in policy.underlay_flows(estate, site) if host.name in f.src_hosts}


def _router(host: Host) -> bool:
    return any(r in ROUTER_ROLES for r in host.roles)


def _group_of(estate: Estate, site: Site, flow: policy.Flow, host: Host) -> str:
    """The group a flow reaching `host` belongs to, by the allow rule's `to`."""
    to = next(r.to for r in estate.standard.allow if r.name == flow.rule)
    if to == policy.ANY:
        return f"{site.slug}-sg-site"
    role = to.removeprefix(policy.ZENTRAL_PREFIX)
    if role in host.roles:
        return f"{site.slug}-sg-{role}"
    return f"{host.name}-sg"  # a zone or another site's role: this host only


def security_groups(estate: Estate, site: Site) -> tuple[tuple[SecurityGroup, ...], dict[str, tuple[str, ...]]]:
    """One group per role of the site's servers, a site group for rules to `any`, host groups for the rest.

    A flow goes to the group its allow rule targets (`to: ad_dc` -> `<slug>-sg-ad_dc`, `to: any`
    -> `<slug>-sg-site`); the flows a router forwards go to its role's group. Every group of a
    role admits what the rule grants to every host of that role, so no host admits more than
    basisit.policy allows (tests/unit/test_stacks.py proves it per server).
    """
    hosts = servers(site)
    names = _keys(policy.flows(estate, site) + policy.transit(estate, site))
    site_group = f"{site.slug}-sg-site"
    members: dict[str, set[Key]] = {site_group: set()}
    descriptions = {site_group: f"{site.slug}: rules to any host (basisit.policy); egress"}
    for role in sorted({r for h in hosts for r in h.roles}):
        members[f"{site.slug}-sg-{role}"] = set()
        descriptions[f"{site.slug}-sg-{role}"] = f"{site.slug}: flows to role {role} (basisit.policy)"
    host_groups: dict[str, list[str]] = {}
    for h in hosts:
        host_groups[h.name] = [site_group, *(f"{site.slug}-sg-{r}" for r in h.roles)]
        for f in policy.inbound(estate, h):
            g = _group_of(estate, site, f, h)
            if g not in members:
                members[g] = set()
                descriptions[g] = f"{h.name}: flows only this host admits"
                host_groups[h.name].append(g)
            members[g].add((f.proto, f.port, f.src))
        if _router(h):
            role = next(r for r in h.roles if r in ROUTER_ROLES)
            members[f"{site.slug}-sg-{role}"] |= set(_keys(policy.transit(estate, site)))
    for name in members:
        if name != site_group:
            members[name] -= members[site_group]  # already admitted on every port
    groups = tuple(
        SecurityGroup(name, descriptions[name], _rules(keys, names), egress=name == site_group)
        for name, keys in members.items()
    )
    under = _keys(policy.underlay_flows(estate, site))
    under_out = {(f.proto, f.port, f.dst): {f.rule} for f in policy.underlay_flows(estate, site)}
    for h in hosts:
        if (name := transfer_group(h)) is not None:
            groups += (
                SecurityGroup(
                    name,
                    f"{h.name}: the transfer link carries only the tunnel (allow rules marked underlay)",
                    _rules(transfer_required(estate, site, h), under),
                    egress_rules=_rules(transfer_egress(estate, site, h), under_out),
                ),
            )
    return groups, {k: tuple(v) for k, v in host_groups.items()}


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
                    # the transfer port: the tunnel's underlay only
                    security_groups=(tg,) if zname == "transfer" and (tg := transfer_group(h)) else host_groups[h.name],
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
