"""Pulumi ComponentResources of a site's tenant: Tenant, SiteNetwork, Servers, SiteDns.

Every component takes a typed args dataclass, parents every child (`parent=self`), passes the
provider explicitly and registers its outputs. Every resource name (logical and physical)
starts with the site's slug, so two stacks never collide.

Providers: the admin provider (clouds.yaml entry of the stack config) creates the project, the
admin's role on it and the quotas. Everything else is created by a provider scoped to the new
project (`tenant_id` = the project's id): OpenStack creates servers, volumes and networks in
the project of the token, not in a project named by an argument.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pulumi
import yaml

with warnings.catch_warnings():
    # pulumi_openstack warns at import about resources it renamed (bgpvpn, lb, fw); none used here.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_openstack as openstack

from basisit import schema, sitefacts
from basisit.cloud.config import CloudConfig, servers
from basisit.cloud.plan import SitePlan
from basisit.model import AUTOMATION_USER, Host, Site

PKG = "basisit:cloud"


def _opts(parent: pulumi.Resource, provider: pulumi.ProviderResource, **kw) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, provider=provider, **kw)


# --- tenant --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantArgs:
    site: Site
    config: CloudConfig
    admin: openstack.Provider
    network_quota: dict[str, int]  # networking quota, computed from the plan


class Tenant(pulumi.ComponentResource):
    """The site's project, the admin's role on it, its quotas and a provider scoped to it."""

    project: openstack.identity.Project
    provider: openstack.Provider

    def __init__(self, name: str, args: TenantArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:Tenant", name, None, opts)
        s, c, admin = args.site, args.config, args.admin
        self.project = openstack.identity.Project(
            f"{s.slug}-project",
            name=f"basisit-{s.slug}",
            description=f"Basis-IT {s.name} ({s.slug}), managed by Pulumi stack {s.slug}",
            tags=["basisit", f"site:{s.slug}"],
            opts=_opts(self, admin),
        )
        invoke = pulumi.InvokeOutputOptions(provider=admin, parent=self)
        scope = openstack.identity.get_auth_scope_output(name=f"{s.slug}-admin", opts=invoke)
        role = openstack.identity.get_role_output(name=c.member_role, opts=invoke)
        self.role_assignment = openstack.identity.RoleAssignment(
            f"{s.slug}-admin-member",
            project_id=self.project.id,
            user_id=scope.user_id,
            role_id=role.id,
            opts=_opts(self, admin),
        )
        q = c.quota
        openstack.compute.QuotaSetV2(
            f"{s.slug}-quota-compute",
            project_id=self.project.id,
            instances=q.instances,
            cores=q.cores,
            ram=q.ram_mb,
            key_pairs=0,
            server_groups=0,
            opts=_opts(self, admin),
        )
        openstack.blockstorage.QuoteSetV3(
            f"{s.slug}-quota-volume",
            project_id=self.project.id,
            volumes=q.volumes,
            gigabytes=q.gigabytes,
            snapshots=q.volumes,
            backups=0,
            backup_gigabytes=0,
            opts=_opts(self, admin),
        )
        openstack.networking.QuotaV2(
            f"{s.slug}-quota-network",
            project_id=self.project.id,
            opts=_opts(self, admin),
            **args.network_quota,
        )
        self.provider = openstack.Provider(
            f"{s.slug}-project-provider",
            cloud=c.cloud,
            region=c.region,
            tenant_id=self.project.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_assignment]),
        )
        self.register_outputs({"project_id": self.project.id})


# --- network -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteNetworkArgs:
    plan: SitePlan
    config: CloudConfig
    provider: openstack.Provider


class SiteNetwork(pulumi.ComponentResource):
    """A network and subnet per zone at the model's CIDRs, the uplink router, the security groups."""

    networks: dict[str, openstack.networking.Network]
    subnets: dict[str, openstack.networking.Subnet]
    security_groups: dict[str, openstack.networking.SecGroup]

    def __init__(self, name: str, args: SiteNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:SiteNetwork", name, None, opts)
        p, c, prov = args.plan, args.config, args.provider
        slug = p.site.slug
        self.networks, self.subnets = {}, {}
        for z in p.zones:
            net = openstack.networking.Network(
                f"{slug}-net-{z.name}",
                name=f"{slug}-{z.name}",
                description=p.site.zones[z.name].description,
                admin_state_up=True,
                port_security_enabled=True,
                opts=_opts(self, prov),
            )
            gateway = p.router_address if z.name == p.router_zone else z.gateway
            self.networks[z.name] = net
            self.subnets[z.name] = openstack.networking.Subnet(
                f"{slug}-subnet-{z.name}",
                name=f"{slug}-{z.name}",
                network_id=net.id,
                cidr=str(z.network),
                ip_version=4,
                gateway_ip=str(gateway) if gateway else None,
                no_gateway=gateway is None,
                enable_dhcp=z.dhcp,
                allocation_pools=[
                    openstack.networking.SubnetAllocationPoolArgs(start=str(z.pool[0]), end=str(z.pool[1]))
                ],
                opts=_opts(self, prov),
            )
        ext = openstack.networking.get_network_output(
            name=c.external_network, external=True, opts=pulumi.InvokeOutputOptions(provider=prov, parent=self)
        )
        self.router = openstack.networking.Router(
            f"{slug}-router",
            name=f"{slug}-uplink",
            admin_state_up=True,
            external_network_id=ext.id,
            opts=_opts(self, prov),
        )
        # The router's interface takes the subnet's gateway address (the plan's router address).
        openstack.networking.RouterInterface(
            f"{slug}-router-{p.router_zone}",
            router_id=self.router.id,
            subnet_id=self.subnets[p.router_zone].id,
            opts=_opts(self, prov),
        )
        self.security_groups = {}
        for g in p.security_groups:
            sg = openstack.networking.SecGroup(
                g.name,
                name=g.name,
                description=g.description,
                delete_default_rules=True,
                opts=_opts(self, prov),
            )
            self.security_groups[g.name] = sg
            for r in g.rules:
                remote = str(r.remote).replace(".", "-").replace("/", "-")
                openstack.networking.SecGroupRule(
                    f"{g.name}-{r.proto}{r.port}-{remote}",
                    security_group_id=sg.id,
                    description=", ".join(r.rules),
                    direction="ingress",
                    ethertype="IPv4",
                    protocol=r.proto,
                    port_range_min=r.port,
                    port_range_max=r.port,
                    remote_ip_prefix=str(r.remote),
                    opts=_opts(self, prov),
                )
            for r in g.egress_rules:
                remote = str(r.remote).replace(".", "-").replace("/", "-")
                openstack.networking.SecGroupRule(
                    f"{g.name}-egress-{r.proto}{r.port}-{remote}",
                    security_group_id=sg.id,
                    description=", ".join(r.rules),
                    direction="egress",
                    ethertype="IPv4",
                    protocol=r.proto,
                    port_range_min=r.port,
                    port_range_max=r.port,
                    remote_ip_prefix=str(r.remote),
                    opts=_opts(self, prov),
                )
            if g.egress:
                openstack.networking.SecGroupRule(
                    f"{g.name}-egress",
                    security_group_id=sg.id,
                    description="egress: the gateway's nftables policy filters what leaves the site",
                    direction="egress",
                    ethertype="IPv4",
                    opts=_opts(self, prov),
                )
        self.register_outputs(
            {
                "networks": {k: n.id for k, n in self.networks.items()},
                "router_id": self.router.id,
                "security_groups": {k: g.id for k, g in self.security_groups.items()},
            }
        )


# --- servers -------------------------------------------------------------------------------


def user_data(host: Host, admins: list[schema.AdminSpec], automation_keys: tuple[str, ...] | list[str] = ()) -> str:
    """cloud-init for a server: hostname, the automation account and the named admins with their
    public keys. Nothing secret."""
    doc = {
        "hostname": host.short,
        "fqdn": host.fqdn,
        "prefer_fqdn_over_hostname": True,
        "manage_etc_hosts": True,
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [
            {
                "name": a.name,
                "gecos": a.full_name,
                "uid": a.uid,
                "shell": "/bin/bash",
                # The group base's sudo rule names (so the first converge's sessions already hold
                # it); the bootstrap NOPASSWD rule is removed by that converge (base owns sudoers.d).
                "groups": ["basisit-admins"],
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": list(a.ssh_keys),
            }
            for a in admins
        ],
    }
    # Ansible and verify log in as the automation account (root never: disable_root). Its
    # bootstrap sudo rule lasts until the first converge writes base's rule for it.
    doc["users"].insert(
        0,
        {
            "name": AUTOMATION_USER,
            "gecos": "basisit automation",
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL:ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": list(automation_keys),
        },
    )
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class ServersArgs:
    plan: SitePlan
    config: CloudConfig
    provider: openstack.Provider
    network: SiteNetwork
    admins: list[schema.AdminSpec]


@dataclass(frozen=True)
class ServerResources:
    host: Host
    instance: openstack.compute.Instance
    ports: dict[str, openstack.networking.Port]  # zone -> port
    volume: openstack.blockstorage.Volume | None


class Servers(pulumi.ComponentResource):
    """Ports at the model's fixed IPs, instances with cloud-init, data volumes attached."""

    servers: list[ServerResources]

    def __init__(self, name: str, args: ServersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:Servers", name, None, opts)
        p, c, prov, net = args.plan, args.config, args.provider, args.network
        self.servers = []
        for h in servers(p.site):
            ports: dict[str, openstack.networking.Port] = {}
            for pp in (x for x in p.ports if x.host == h.name):
                ports[pp.zone] = openstack.networking.Port(
                    pp.name,
                    name=pp.name,
                    network_id=net.networks[pp.zone].id,
                    admin_state_up=True,
                    fixed_ips=[
                        openstack.networking.PortFixedIpArgs(
                            subnet_id=net.subnets[pp.zone].id, ip_address=str(pp.address)
                        )
                    ],
                    security_group_ids=[net.security_groups[g].id for g in pp.security_groups],
                    allowed_address_pairs=[
                        openstack.networking.PortAllowedAddressPairArgs(ip_address=str(n))
                        for n in pp.allowed_address_pairs
                    ]
                    or None,
                    opts=_opts(self, prov),
                )
            instance = openstack.compute.Instance(
                h.name,
                name=h.name,
                image_name=c.image,
                flavor_name=c.flavor(h),
                availability_zone=c.availability_zone,
                config_drive=True,
                user_data=user_data(h, args.admins, c.automation_keys),
                networks=[openstack.compute.InstanceNetworkArgs(port=port.id) for port in ports.values()],
                metadata={"basisit_site": p.site.slug, "basisit_host": h.name, "basisit_roles": ",".join(h.roles)},
                # cloud-init runs at first boot only and a new image version is Ansible's business
                # (apt); a change to either must not replace a running server.
                opts=_opts(self, prov, ignore_changes=["user_data", "image_name"]),
            )
            volume = None
            gb = c.volume_gb(h)
            if gb > 0:
                volume = openstack.blockstorage.Volume(
                    f"{h.name}-data",
                    name=f"{h.name}-data",
                    description=f"data volume of {h.name} ({', '.join(h.roles)})",
                    size=gb,
                    volume_type=c.volume_type,
                    availability_zone=c.availability_zone,
                    opts=_opts(self, prov, protect=True),  # data outlives `pulumi destroy`
                )
                openstack.compute.VolumeAttach(
                    f"{h.name}-data-attach",
                    instance_id=instance.id,
                    volume_id=volume.id,
                    opts=_opts(self, prov),
                )
            self.servers.append(ServerResources(h, instance, ports, volume))
        self.register_outputs({"instances": {s.host.name: s.instance.id for s in self.servers}})

    def site_facts(self, site: Site, standard_version: int) -> pulumi.Output[dict]:
        """The site-facts document (backend cloud): addresses are the ports' fixed IPs."""

        def host_entry(s: ServerResources) -> pulumi.Output[dict]:
            zones = list(s.ports)
            ips = [s.ports[z].all_fixed_ips for z in zones]

            def entry(args: list) -> dict:
                instance_id, *fixed = args
                addresses = {z: str(a) for z, a in s.host.addresses.items() if z not in zones}  # overlay
                addresses.update({z: ip[0] for z, ip in zip(zones, fixed, strict=True)})
                return {
                    "roles": list(s.host.roles),
                    "addresses": dict(sorted(addresses.items())),
                    "ansible_host": addresses[s.host.primary_zone],
                    "instance_id": instance_id,
                }

            return pulumi.Output.all(s.instance.id, *ips).apply(entry)

        entries = [host_entry(s) for s in self.servers]
        names = [s.host.name for s in self.servers]
        return pulumi.Output.all(*entries).apply(
            lambda es: sitefacts.build(
                site, "cloud", standard_version, dict(zip(names, es, strict=True)), {"user": AUTOMATION_USER}
            )
        )


# --- DNS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteDnsArgs:
    site: Site
    provider: openstack.Provider
    ttl: int = 3600


class SiteDns(pulumi.ComponentResource):
    """A Designate zone for the site's domain with an A record per server (its primary address)."""

    def __init__(self, name: str, args: SiteDnsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:SiteDns", name, None, opts)
        s, prov = args.site, args.provider
        self.zone = openstack.dns.Zone(
            f"{s.slug}-dns",
            name=f"{s.domain}.",
            email=f"hostmaster@{s.domain}",
            ttl=args.ttl,
            type="PRIMARY",
            description=f"{s.name}: servers of the Basis-IT site",
            opts=_opts(self, prov),
        )
        for h in servers(s):
            openstack.dns.RecordSet(
                f"{h.name}-dns-a",
                zone_id=self.zone.id,
                name=f"{h.fqdn}.",
                type="A",
                ttl=args.ttl,
                records=[str(h.address)],
                opts=_opts(self, prov),
            )
        self.register_outputs({"zone_id": self.zone.id})
