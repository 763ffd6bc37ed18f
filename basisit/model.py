"""The derived model of the estate: sites, zones, hosts, addresses.

Pure functions of the validated inventory (basisit.schema objects); no I/O here. Every consumer
(lab, Pulumi stacks, inventory plugin, compliance checks, reports) uses these objects, so no two
places can disagree about an address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from basisit import schema

ZENTRAL = "zentral"
# The local account Ansible and `basisit verify` connect as on every host: key-only login, the
# only NOPASSWD sudo rule; its group is of the same name and one of sshd's AllowGroups. The lab's
# golden image and cloud-init create it with the operator's key; nothing logs in as root.
AUTOMATION_USER = "basisit-automation"


@dataclass(frozen=True)
class Zone:
    name: str
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    description: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cidr": str(self.network),
            "gateway": str(self.gateway) if self.gateway else None,
            "description": self.description,
        }


@dataclass(frozen=True)
class Host:
    """One host of a site. `name` is unique in the estate (it is the Ansible inventory name)."""

    name: str  # e.g. bexbach-dc1, zentral-backup
    short: str  # e.g. dc1 (hostname inside the site)
    site: str  # Kommune slug or "zentral"
    kind: str  # gw, dc, fs, ep (endpoint) or the zentral host name
    roles: tuple[str, ...]
    addresses: dict[str, ipaddress.IPv4Address]  # zone -> address
    primary_zone: str  # the zone Ansible and operators reach it on
    fqdn: str
    asset: schema.Endpoint | None = None

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.addresses[self.primary_zone]

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "hostname": self.short,
            "fqdn": self.fqdn,
            "site": self.site,
            "kind": self.kind,
            "roles": list(self.roles),
            "primary_zone": self.primary_zone,
            "address": str(self.address),
            "addresses": {z: str(a) for z, a in self.addresses.items()},
        }
        if self.asset is not None:
            d["asset"] = {
                "asset_tag": self.asset.asset_tag,
                "department": self.asset.department,
                "os": self.asset.os,
            }
        return d


@dataclass(frozen=True)
class Site:
    slug: str
    name: str
    block: ipaddress.IPv4Network | None  # None for zentral (it has explicit zones)
    zones: dict[str, Zone]
    hosts: tuple[Host, ...]
    domain: str
    kommune: schema.KommuneFile | None = None
    size: str | None = None
    vpn_address: ipaddress.IPv4Address | None = None

    @property
    def is_zentral(self) -> bool:
        return self.slug == ZENTRAL

    def host(self, short: str) -> Host:
        for h in self.hosts:
            if h.short == short:
                return h
        raise KeyError(f"{self.slug} has no host {short!r}")

    def hosts_with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

    def to_dict(self) -> dict:
        d: dict = {
            "slug": self.slug,
            "name": self.name,
            "domain": self.domain,
            "block": str(self.block) if self.block else None,
            "zones": {n: z.to_dict() for n, z in self.zones.items()},
            "hosts": [h.to_dict() for h in self.hosts],
        }
        if self.kommune is not None:
            k = self.kommune
            d.update(
                ags=k.ags,
                kind=k.kind,
                district=k.district,
                population=k.population.count,
                population_date=k.population.date.isoformat(),
                wave=str(k.wave),
                size=self.size,
                net_index=k.net_index,
                netbios=k.netbios,
                realm=k.ad_domain.upper(),
                vpn_address=str(self.vpn_address) if self.vpn_address else None,
            )
        return d


@dataclass(frozen=True)
class Estate:
    """The whole validated and derived inventory."""

    standard: schema.StandardFile
    zentral: Site
    kommunen: dict[str, Site]  # slug -> site, sorted by slug (the active ones)
    sources: dict[str, str] = field(default_factory=dict)  # slug -> file path
    # Kommunen whose file says `status: retired`: derived (so their names and numbers stay
    # reserved), but not part of the estate anyone converges, peers with or backs up.
    retired: dict[str, Site] = field(default_factory=dict)

    @property
    def sites(self) -> list[Site]:
        return [self.zentral, *self.kommunen.values()]

    def site(self, slug: str) -> Site:
        if slug == ZENTRAL:
            return self.zentral
        return self.kommunen[slug]

    def hosts(self) -> list[Host]:
        return [h for s in self.sites for h in s.hosts]

    def wave(self, wave: str) -> list[Site]:
        return [s for s in self.kommunen.values() if s.kommune and str(s.kommune.wave) == str(wave)]


# --- derivation ----------------------------------------------------------------------------


def size_class(standard: schema.StandardFile, population: int) -> str:
    """The size class of a Kommune by population (thresholds from the standard)."""
    for name in schema.SIZE_CLASSES:
        spec = standard.size_classes.get(name)
        if spec is None:
            continue
        if spec.max_population is None or population <= spec.max_population:
            return name
    return schema.SIZE_CLASSES[-1]


def effective_size(standard: schema.StandardFile, k: schema.KommuneFile) -> str:
    return k.size if k.size is not None else size_class(standard, k.population.count)


def kommune_block(standard: schema.StandardFile, net_index: int) -> ipaddress.IPv4Network:
    a = standard.addressing
    base = int(a.supernet.network_address) + net_index * 2 ** (32 - a.block_prefix)
    return ipaddress.IPv4Network((base, a.block_prefix))


def max_net_index(standard: schema.StandardFile) -> int:
    a = standard.addressing
    return 2 ** (a.block_prefix - a.supernet.prefixlen) - 1


def zone_network(block: ipaddress.IPv4Network, spec: schema.ZoneSpec) -> ipaddress.IPv4Network:
    base = int(block.network_address) + spec.index * 2 ** (32 - spec.prefix)
    return ipaddress.IPv4Network((base, spec.prefix))


def nth(net: ipaddress.IPv4Network, n: int) -> ipaddress.IPv4Address:
    """The n-th address of a network; raises ValueError when n is not a usable host."""
    if not 1 <= n < net.num_addresses - 1:
        raise ValueError(f"host number {n} is outside {net} (usable 1..{net.num_addresses - 2})")
    return net.network_address + n


def derive_kommune(standard: schema.StandardFile, zentral: Site, k: schema.KommuneFile) -> Site:
    block = kommune_block(standard, k.net_index)
    size = effective_size(standard, k)
    zones = _kommune_zones(standard.addressing, block)
    hosts = _server_hosts(standard, k, size, zones) + _endpoint_hosts(standard, k, zones)
    vpn = zentral.zones.get("vpn")
    vpn_address = nth(vpn.network, k.net_index) if vpn else None
    return Site(
        slug=k.slug,
        name=k.name,
        block=block,
        zones=zones,
        hosts=tuple(hosts),
        domain=k.ad_domain,
        kommune=k,
        size=size,
        vpn_address=vpn_address,
    )


def _kommune_zones(a: schema.AddressingSpec, block: ipaddress.IPv4Network) -> dict[str, Zone]:
    zones: dict[str, Zone] = {}
    for zname in schema.ZONE_NAMES:
        spec = a.zones[zname]
        net = zone_network(block, spec)
        # In the transfer zone the next hop is zentral's router; everywhere else the site gateway.
        gw = nth(net, a.transfer_zentral_host if zname == "transfer" else a.gateway_host)
        zones[zname] = Zone(zname, net, gw, spec.description)
    return zones


def _server_hosts(
    standard: schema.StandardFile, k: schema.KommuneFile, size: str, zones: dict[str, Zone]
) -> list[Host]:
    """The host kinds' hosts for the Kommune's size class, numbered from each kind's host number."""
    a = standard.addressing
    hosts: list[Host] = []
    for kind, spec in standard.host_kinds.items():
        count = spec.count.get(size, 0)
        for i in range(count):
            short = kind if count == 1 and spec.host is None else f"{kind}{i + 1}"
            if "gateway" in spec.roles:
                addrs = {z: (nth(zones[z].network, a.gateway_host)) for z in ("management", "server", "client")}
                addrs["transfer"] = nth(zones["transfer"].network, a.transfer_gateway_host)
            else:
                addrs = {spec.zone: nth(zones[spec.zone].network, (spec.host or 1) + i)}
            hosts.append(
                Host(
                    name=f"{k.slug}-{short}",
                    short=short,
                    site=k.slug,
                    kind=kind,
                    roles=tuple(spec.roles),
                    addresses=addrs,
                    primary_zone=spec.zone,
                    fqdn=f"{short}.{k.ad_domain}",
                )
            )
    return hosts


def _endpoint_hosts(standard: schema.StandardFile, k: schema.KommuneFile, zones: dict[str, Zone]) -> list[Host]:
    """The Kommune's endpoints in index order, each at the client zone's first endpoint host + index."""
    hosts: list[Host] = []
    for ep in sorted(k.endpoints, key=lambda e: e.index):
        addr = nth(zones["client"].network, standard.addressing.endpoint_first_host + ep.index)
        hosts.append(
            Host(
                name=f"{k.slug}-{ep.hostname}",
                short=ep.hostname,
                site=k.slug,
                kind="ep",
                roles=tuple(standard.endpoints.roles),
                addresses={"client": addr},
                primary_zone="client",
                fqdn=f"{ep.hostname}.{k.ad_domain}",
                asset=ep,
            )
        )
    return hosts


def derive_zentral(z: schema.ZentralFile, gateway_host: int = 1) -> Site:
    zones = {
        name: Zone(name, spec.cidr, nth(spec.cidr, gateway_host), spec.description) for name, spec in z.zones.items()
    }
    hosts = []
    for h in z.hosts:
        addrs = {zone: nth(zones[zone].network, n) for zone, n in h.addresses.items()}
        primary = "management" if "management" in addrs else next(iter(addrs))
        hosts.append(
            Host(
                name=f"{ZENTRAL}-{h.name}",
                short=h.name,
                site=ZENTRAL,
                kind=h.name,
                roles=tuple(h.roles),
                addresses=addrs,
                primary_zone=primary,
                fqdn=f"{h.name}.{z.domain}",
            )
        )
    return Site(slug=ZENTRAL, name=z.name, block=None, zones=zones, hosts=tuple(hosts), domain=z.domain)


def lab_endpoints(standard: schema.StandardFile, site: Site) -> list[Host]:
    """The endpoints the lab realises for a site: the first `lab_cap` by index."""
    return [h for h in site.hosts if h.kind == "ep"][: standard.endpoints.lab_cap]
