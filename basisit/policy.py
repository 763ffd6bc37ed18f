"""The standard's `allow` matrix resolved into concrete flows: the one resolver.

Every consumer that filters traffic or checks it uses this module: the OpenStack security groups
(basisit.cloud), the gateway's nftables rules and the reachability compliance checks. Pure
functions of the model; no I/O.

Names in a rule's `from`/`to`:

- a zone of the Kommune (`client`, `server`, ...)  -> that zone's network
- a role (`ad_dc`, `file_server`, ...)             -> each host of the site with that role (/32)
- `any` (only in `to`)                             -> each host of the site (/32)
- `zentral:<role>`                                 -> each zentral host with that role (/32)
- `zentral:<zone>`                                 -> that zentral zone's network (e.g. management)

A flow's destination address is the host's address in the source zone when it has one (a client
reaches the gateway at its client address), else its primary address. The matrix is written
for a Kommune; `flows(estate, zentral)` is every Kommune's flows into or out of zentral
(`zentral:<role|zone>` on either side), plus rules from `zentral:<role|zone>` to `any` applied
to zentral's own hosts.
Nothing ever resolves to 0.0.0.0/0 or to another Kommune's networks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from basisit.model import Estate, Host, Site

ZENTRAL_PREFIX = "zentral:"
ANY = "any"


class PolicyError(ValueError):
    """A rule names something the model does not have."""


@dataclass(frozen=True, order=True)
class Flow:
    """One allowed connection: `src` may open `proto`/`port` to `dst`."""

    rule: str  # the allow rule's name, e.g. client-dns
    site: str  # the Kommune (or zentral) whose matrix produced the flow
    src: ipaddress.IPv4Network
    dst: ipaddress.IPv4Network  # a host /32, or a zone network when `to` names a zone
    src_hosts: tuple[str, ...]  # model hosts (Host.name) with an address in src
    dst_hosts: tuple[str, ...]  # model hosts (Host.name) the flow reaches
    proto: str  # tcp or udp
    port: int

    @property
    def label(self) -> str:
        return f"{self.rule}: {self.src} -> {self.dst} {self.proto}/{self.port}"


@dataclass(frozen=True)
class _End:
    """One resolved end of a rule: a network and the hosts in it."""

    net: ipaddress.IPv4Network
    hosts: tuple[Host, ...]


def _host_net(addr: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(addr), 32))


def _zentral_role(estate: Estate, role: str, rule: str) -> list[Host]:
    hosts = estate.zentral.hosts_with_role(role)
    if not hosts:
        raise PolicyError(f"allow rule {rule}: no zentral host has role {role!r}")
    return hosts


def _zentral_end(estate: Estate, name: str, rule: str) -> list[_End]:
    """`zentral:<zone>` is that zentral zone's network (e.g. the operators' management network),
    `zentral:<role>` the /32 of each zentral host with that role."""
    z = estate.zentral
    if name in z.zones:
        return [_End(z.zones[name].network, tuple(h for h in z.hosts if name in h.addresses))]
    return [_End(_host_net(h.address), (h,)) for h in _zentral_role(estate, name, rule)]


def _is_zone(site: Site, name: str) -> bool:
    return name in site.zones


def _resolve_src(estate: Estate, site: Site, name: str, rule: str) -> list[_End]:
    if name.startswith(ZENTRAL_PREFIX):
        return _zentral_end(estate, name[len(ZENTRAL_PREFIX) :], rule)
    if _is_zone(site, name):
        net = site.zones[name].network
        return [_End(net, tuple(h for h in site.hosts if name in h.addresses))]
    hosts = site.hosts_with_role(name)
    if not hosts and not _known_role(estate, name):
        raise PolicyError(f"allow rule {rule}: `from: {name}` is neither a zone, a role nor zentral:<role>")
    return [_End(_host_net(h.address), (h,)) for h in hosts]


def _dst_address(h: Host, src_zone: str | None) -> ipaddress.IPv4Address:
    if src_zone is not None and src_zone in h.addresses:
        return h.addresses[src_zone]
    return h.address


def _resolve_dst(estate: Estate, site: Site, name: str, rule: str, src_zone: str | None) -> list[_End]:
    if name.startswith(ZENTRAL_PREFIX):
        return _zentral_end(estate, name[len(ZENTRAL_PREFIX) :], rule)
    if name == ANY:
        hosts = list(site.hosts)
    elif _is_zone(site, name):
        return [_End(site.zones[name].network, tuple(h for h in site.hosts if name in h.addresses))]
    else:
        hosts = site.hosts_with_role(name)
        if not hosts and not _known_role(estate, name):
            raise PolicyError(f"allow rule {rule}: `to: {name}` is neither a zone, a role, any nor zentral:<role>")
    return [_End(_host_net(_dst_address(h, src_zone)), (h,)) for h in hosts]


def _known_role(estate: Estate, role: str) -> bool:
    std = estate.standard
    roles = {r for k in std.host_kinds.values() for r in k.roles} | set(std.endpoints.roles)
    return role in roles


def _expand(rule, site: str, srcs: list[_End], dsts: list[_End]) -> list[Flow]:
    out = []
    for s in srcs:
        for d in dsts:
            if s.hosts and d.hosts and s.net.prefixlen == 32 and s.hosts == d.hosts:
                continue  # a host never needs a rule to itself
            for proto in rule.proto:
                for port in rule.ports:
                    out.append(
                        Flow(
                            rule=rule.name,
                            site=site,
                            src=s.net,
                            dst=d.net,
                            src_hosts=tuple(h.name for h in s.hosts),
                            dst_hosts=tuple(h.name for h in d.hosts),
                            proto=proto,
                            port=port,
                        )
                    )
    return out


def _kommune_flows(estate: Estate, site: Site) -> list[Flow]:
    flows: list[Flow] = []
    for rule in estate.standard.allow:
        src_z = rule.src.startswith(ZENTRAL_PREFIX)
        dst_z = rule.to.startswith(ZENTRAL_PREFIX)
        if src_z and dst_z:
            continue  # zentral-internal; see _zentral_flows
        srcs = _resolve_src(estate, site, rule.src, rule.name)
        src_zone = rule.src if _is_zone(site, rule.src) else None
        dsts = _resolve_dst(estate, site, rule.to, rule.name, src_zone)
        flows += _expand(rule, site.slug, srcs, dsts)
    return flows


def _zentral_flows(estate: Estate) -> list[Flow]:
    z = estate.zentral
    zentral_hosts = {h.name for h in z.hosts}
    flows: list[Flow] = []
    zentral_nets = [zone.network for zone in z.zones.values()]
    for site in estate.kommunen.values():
        for f in _kommune_flows(estate, site):
            into = bool(f.dst_hosts) and set(f.dst_hosts) <= zentral_hosts
            out_of = any(f.src.subnet_of(n) for n in zentral_nets)  # e.g. operators' SSH to the Kommunen
            if into or out_of:
                flows.append(f)
    for rule in estate.standard.allow:
        if not rule.src.startswith(ZENTRAL_PREFIX):
            continue
        srcs = _resolve_src(estate, z, rule.src, rule.name)
        if rule.to == ANY:
            dsts = [_End(_host_net(h.address), (h,)) for h in z.hosts]
        elif rule.to.startswith(ZENTRAL_PREFIX):
            dsts = _resolve_dst(estate, z, rule.to, rule.name, None)
            for d in dsts:  # each destination from the address the source really connects from
                flows += _expand(rule, z.slug, [_near_source(s, d) for s in srcs], [d])
            continue
        else:
            continue  # names a Kommune zone or role: applied per Kommune
        flows += _expand(rule, z.slug, srcs, dsts)
    return flows


def _near_source(src: _End, dst: _End) -> _End:
    """A zentral host in the destination's own zone connects from its address in that zone (the
    kernel picks the address of the directly connected network): zentral's gateway, in every
    zone, reaches the log host in `services` from its services address, not its primary one.
    Any other source (a zone, a host outside the destination's zone) stays as it is."""
    if src.net.prefixlen != 32 or len(src.hosts) != 1 or len(dst.hosts) != 1:
        return src
    zones = [zone for zone, a in dst.hosts[0].addresses.items() if a in dst.net]
    host = src.hosts[0]
    if zones and zones[0] in host.addresses and host.addresses[zones[0]] not in src.net:
        return _End(_host_net(host.addresses[zones[0]]), src.hosts)
    return src


# Memo of flows per (estate object, site): the estate is immutable, and zentral's flows walk
# every Kommune. Keyed by identity (the estate holds dicts, so it is not hashable).
_MEMO: dict[tuple[int, str], tuple[Estate, tuple[Flow, ...]]] = {}


def flows(estate: Estate, site: Site | str) -> list[Flow]:
    """Every flow that starts or ends at a host or zone of `site` (sorted, without duplicates)."""
    s = estate.site(site) if isinstance(site, str) else site
    key = (id(estate), s.slug)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is estate and estate.site(s.slug) is s:
        return list(hit[1])
    found = _zentral_flows(estate) if s.is_zentral else _kommune_flows(estate, s)
    result = tuple(sorted(set(found)))
    if len(_MEMO) > 512:
        _MEMO.clear()
    _MEMO[key] = (estate, result)
    return list(result)


def inbound(estate: Estate, host: Host) -> list[Flow]:
    """Flows whose destination includes `host`: what its firewall must admit."""
    return [f for f in flows(estate, host.site) if host.name in f.dst_hosts]


def outbound(estate: Estate, host: Host) -> list[Flow]:
    """Flows `host` may open (as a member of the source zone or as the source host)."""
    return [f for f in flows(estate, host.site) if host.name in f.src_hosts]


def transit(estate: Estate, site: Site) -> list[Flow]:
    """Flows the site's router (gateway) forwards: those whose source is not in the destination's zone."""
    out = []
    for f in flows(estate, site):
        if not any(f.src.subnet_of(z.network) and f.dst.subnet_of(z.network) for z in site.zones.values()):
            out.append(f)
    return out


def allowed(
    estate: Estate, site: Site, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: str, port: int
) -> Flow | None:
    """The flow that admits src -> dst proto/port, or None when the matrix drops it."""
    for f in flows(estate, site):
        if f.proto == proto and f.port == port and src in f.src and dst in f.dst:
            return f
    return None


def site_networks(site: Site) -> list[ipaddress.IPv4Network]:
    """The networks a site owns (its block, or zentral's zones)."""
    return [site.block] if site.block is not None else [z.network for z in site.zones.values()]


def foreign(estate: Estate, site: Site, net: ipaddress.IPv4Network) -> bool:
    """True when `net` overlaps a Kommune other than `site` (zentral is shared, never foreign)."""
    for other in estate.kommunen.values():
        if other.slug == site.slug:
            continue
        if any(net.overlaps(n) for n in site_networks(other)):
            return True
    return False


def firewall_rules(found: list[Flow], with_dst: bool) -> list[dict]:
    """Flows grouped into nftables-sized rules: one per (rule, proto, dst) with its sources and ports.

    The allow matrix expands every rule as sources x destinations x protocols x ports, so grouping
    by (rule, proto, dst) loses nothing: each group is exactly its sources x its ports.
    """
    groups: dict[tuple, tuple[set, set]] = {}
    for f in found:
        key = (f.rule, f.proto, str(f.dst) if with_dst else "")
        srcs, ports = groups.setdefault(key, (set(), set()))
        srcs.add(f.src)
        ports.add(f.port)
    out = []
    for (rule, proto, dst), (srcs, ports) in sorted(groups.items()):
        r = {"rule": rule, "proto": proto, "src": [str(n) for n in sorted(srcs)], "ports": sorted(ports)}
        if with_dst:
            r["dst"] = dst
        out.append(r)
    return out


def forward_flows(estate: Estate, site: Site) -> list[Flow]:
    """What the site's router forwards: its transit flows; zentral's router also carries the flows
    zentral hosts open into the Kommunen (e.g. zentral-mgmt-ssh)."""
    found = set(transit(estate, site))
    if site.is_zentral:
        zentral_hosts = {h.name for h in site.hosts}
        for k in estate.kommunen.values():
            found |= {f for f in flows(estate, k) if set(f.src_hosts) & zentral_hosts}
    return sorted(found)


ROUTER_ROLES = frozenset({"gateway", "zentral_gateway"})


def forward_rules(estate: Estate, host: Host) -> list[dict]:
    """The forward rule set of a site router (gateway role): what its nftables forward chain
    admits; [] for every other host."""
    if not ROUTER_ROLES & set(host.roles):
        return []
    return firewall_rules(forward_flows(estate, estate.site(host.site)), with_dst=True)


def inbound_rules(estate: Estate, host: Host) -> list[dict]:
    """The host's input rule set (sources and ports per rule and protocol)."""
    return firewall_rules(inbound(estate, host), with_dst=False)


def outbound_rules(estate: Estate, host: Host) -> list[dict]:
    """What the host may open, grouped per rule, protocol and destination."""
    return firewall_rules(outbound(estate, host), with_dst=True)


def outbound_rule_names(estate: Estate, host: Host) -> list[str]:
    """The names of the allow rules the host may open connections under (sorted)."""
    return sorted({f.rule for f in outbound(estate, host)})


LOG_ROLE = "log_host"


def log_rules(estate: Estate) -> list[str]:
    """The allow rules that carry logs: those whose `to` names the log host (`zentral:log_host`)."""
    names = {LOG_ROLE, ZENTRAL_PREFIX + LOG_ROLE}
    return sorted({r.name for r in estate.standard.allow if r.to in names})


def log_flows(estate: Estate, host: Host) -> list[Flow]:
    """The flows that may deliver logs to `host` (a log host): its inbound flows under log_rules."""
    rules = set(log_rules(estate))
    return [f for f in inbound(estate, host) if f.rule in rules]


def log_senders(estate: Estate, host: Host) -> dict[str, str]:
    """A log host's senders, address -> host name: each address from which a model host may open a
    connection to it under a log rule (its address inside that flow's source network); {} for a
    host without the log_host role. The log host files every line by the connection's source
    address through this map, never by the name the sender claims in its messages."""
    if LOG_ROLE not in host.roles:
        return {}
    by_name = {h.name: h for h in estate.hosts()}
    out: dict[ipaddress.IPv4Address, str] = {}
    for f in log_flows(estate, host):
        for name in f.src_hosts:
            for addr in by_name[name].addresses.values():
                if addr in f.src and out.setdefault(addr, name) != name:
                    raise PolicyError(f"log sender {addr} is both {out[addr]} and {name}")
    return {str(a): out[a] for a in sorted(out)}


PACKAGE_PROXY_ROLE = "package_proxy"


def package_proxy_rules(estate: Estate) -> list[str]:
    """The allow rules that reach the package proxy: those whose `to` is `zentral:package_proxy`."""
    return sorted({r.name for r in estate.standard.allow if r.to == ZENTRAL_PREFIX + PACKAGE_PROXY_ROLE})


def package_proxy(estate: Estate, host: Host) -> dict:
    """Where `host`'s apt fetches packages: {url, address, port, rules, listen}.

    The proxy is the zentral host with the package_proxy role (exactly one), its port the one tcp
    port of the rules that reach it (the allow matrix is the port's one home). `listen`: for the
    proxy host itself, the addresses those rules' flows reach (apt-cacher-ng binds only these),
    [] for every other host. The proxy host's own apt uses its own address."""
    proxies = estate.zentral.hosts_with_role(PACKAGE_PROXY_ROLE)
    if len(proxies) != 1:
        raise PolicyError(f"zentral has {len(proxies)} hosts with role {PACKAGE_PROXY_ROLE}; expected exactly one")
    [proxy] = proxies
    names = package_proxy_rules(estate)
    rules = [r for r in estate.standard.allow if r.name in names]
    ports = {p for r in rules for p in r.ports}
    if not rules or len(ports) != 1 or any(r.proto != ["tcp"] for r in rules):
        raise PolicyError(
            f"the allow rules to zentral:{PACKAGE_PROXY_ROLE} ({', '.join(names) or 'none'}) must name one tcp port; "
            f"found ports {sorted(ports)}"
        )
    [port] = ports
    listen: list[str] = []
    if proxy.name == host.name:
        listen = sorted({str(f.dst.network_address) for f in inbound(estate, proxy) if f.rule in names})
    return {
        "url": f"http://{proxy.address}:{port}/",
        "address": str(proxy.address),
        "host": proxy.name,
        "port": port,
        "rules": names,
        "listen": listen,
    }


def vpn_peers(estate: Estate, host: Host) -> list[dict]:
    """A VPN hub's WireGuard peers: every Kommune gateway of the estate ({kommune, address,
    block, gateway}); [] for a host without the vpn_hub role. The hub knows every Kommune in
    advance, so a site that comes up later needs no change on zentral. A peer's AllowedIPs are its
    tunnel address and its Kommune's block: the hub routes the block into the tunnel (while the
    peer's handshake is live, see roles/vpn_hub)."""
    if "vpn_hub" not in host.roles:
        return []
    return [
        {"kommune": k.slug, "address": str(k.vpn_address), "block": str(k.block), "gateway": gw.name}
        for k in estate.kommunen.values()
        if k.vpn_address is not None and k.block is not None
        for gw in k.hosts_with_role("gateway")
    ]


def vpn_networks(estate: Estate, host: Host) -> list[str]:
    """What a Kommune gateway routes into its tunnel (its peer's AllowedIPs): zentral's networks
    (every zone but the overlay) and the hub's tunnel address; [] for every other host."""
    site = estate.site(host.site)
    if site.is_zentral or "gateway" not in host.roles or site.vpn_address is None:
        return []
    z = estate.zentral
    nets = [zone.network for name, zone in z.zones.items() if name != VPN_ZONE]
    nets += [_host_net(h.addresses[VPN_ZONE]) for h in z.hosts_with_role("vpn_hub") if VPN_ZONE in h.addresses]
    return [str(n) for n in sorted(set(nets))]


VPN_ZONE = "vpn"


def underlay_flows(estate: Estate, site: Site) -> list[Flow]:
    """The flows of `site` that may cross a transfer link in clear: those of rules marked
    `underlay` (the tunnel itself and the SSH that builds or repairs it)."""
    rules = {r.name for r in estate.standard.allow if r.underlay}
    return [f for f in flows(estate, site) if f.rule in rules]


def tunnel_flows(estate: Estate, site: Site) -> list[Flow]:
    """The flows between a Kommune and zentral that must travel inside the tunnel: every flow
    with one end in the Kommune's block and the other in zentral's networks, except underlay ones."""
    if site.is_zentral or site.block is None:
        return []
    under = set(underlay_flows(estate, site))
    znets = site_networks(estate.zentral)
    out = []
    for f in flows(estate, site):
        if f in under:
            continue
        a_in, b_in = f.src.subnet_of(site.block), f.dst.subnet_of(site.block)
        a_z, b_z = any(f.src.subnet_of(n) for n in znets), any(f.dst.subnet_of(n) for n in znets)
        if (a_in and b_z) or (a_z and b_in):
            out.append(f)
    return out


def _underlay_group(found: list[tuple[str, Flow]]) -> list[dict]:
    """(direction, flow) pairs as nftables rules ({rule, proto, direction, port_side, src, dst,
    ports}). `direction` says which way the packet goes: `request` (src -> dst, matched on the
    destination port) or `reply` (dst -> src, on the source port). One rule per (rule, proto,
    direction) when its packets are exactly sources x destinations x ports (the usual case: one
    management host, one hub), else one per destination."""
    triples: dict[tuple, set] = {}
    for direction, f in found:
        a, b = (f.src, f.dst) if direction == "request" else (f.dst, f.src)
        triples.setdefault((f.rule, f.proto, direction), set()).add((a, b, f.port))
    out = []
    for (rule, proto, direction), got in sorted(triples.items()):
        srcs, dsts, ports = ({t[i] for t in got} for i in range(3))
        parts = [got] if len(got) == len(srcs) * len(dsts) * len(ports) else _by_dst(got)
        for part in parts:
            out.append(
                {
                    "rule": rule,
                    "proto": proto,
                    "direction": direction,
                    "port_side": "dport" if direction == "request" else "sport",
                    "src": [str(n) for n in sorted({t[0] for t in part})],
                    "dst": [str(n) for n in sorted({t[1] for t in part})],
                    "ports": sorted({t[2] for t in part}),
                }
            )
    return out


def _by_dst(got: set) -> list[set]:
    """Split (src, dst, port) triples per (dst, port): each part is a product of its sources."""
    parts: dict[tuple, set] = {}
    for t in got:
        parts.setdefault((t[1], t[2]), set()).add(t)
    return [parts[k] for k in sorted(parts)]


def underlay_rules(estate: Estate, host: Host) -> dict[str, list[dict]]:
    """What a site router admits on its transfer (underlay) interfaces, per hook: `input` (to
    this host), `output` (from it) and `forward`, each a list of rules ({rule, proto, direction,
    port_side, src, dst, ports}): the underlay flows that start or end at the host's addresses,
    or that it forwards, in both directions (requests and their replies). Everything else on
    those interfaces is refused: a service flow between a site and zentral never leaves a router
    other than through the tunnel. {} for a host that is not a router."""
    if not ROUTER_ROLES & set(host.roles):
        return {}
    mine = [_host_net(a) for a in host.addresses.values()]

    def at(net: ipaddress.IPv4Network) -> bool:
        return any(m.subnet_of(net) for m in mine)

    hooks: dict[str, list[tuple[str, Flow]]] = {"input": [], "output": [], "forward": []}
    for f in underlay_flows(estate, estate.site(host.site)):
        # a flow from a whole network (site-vpn: the transfer zone) concerns this host only when
        # the host is the end inside it: its own address, not its neighbours'
        src_me = at(f.src) and (f.src.prefixlen == 32 or host.name in f.src_hosts)
        dst_me = at(f.dst) and (f.dst.prefixlen == 32 or host.name in f.dst_hosts)
        if dst_me:
            hooks["input"] += [("request", f)]
            hooks["output"] += [("reply", f)]
        elif src_me:
            hooks["output"] += [("request", f)]
            hooks["input"] += [("reply", f)]
        else:
            hooks["forward"] += [("request", f), ("reply", f)]
    return {k: _underlay_group(v) for k, v in hooks.items()}


__all__ = [
    "ANY",
    "ZENTRAL_PREFIX",
    "Flow",
    "PolicyError",
    "allowed",
    "firewall_rules",
    "flows",
    "foreign",
    "forward_flows",
    "forward_rules",
    "inbound",
    "inbound_rules",
    "log_flows",
    "log_rules",
    "log_senders",
    "outbound",
    "outbound_rule_names",
    "outbound_rules",
    "package_proxy",
    "package_proxy_rules",
    "site_networks",
    "transit",
    "tunnel_flows",
    "underlay_flows",
    "underlay_rules",
    "vpn_networks",
    "vpn_peers",
]
