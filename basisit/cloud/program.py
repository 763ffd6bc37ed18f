"""The Pulumi programs. `stacks/kommune/__main__.py` calls `kommune()`, `stacks/zentral/__main__.py`
calls `zentral()`; both build the same blocks for the site named by the stack.

`run(estate)` returns the stack outputs instead of exporting them, so the unit tests can await
them under `pulumi.runtime.set_mocks`; `main()` exports them.
"""

from __future__ import annotations

from pathlib import Path

import pulumi

from basisit.cloud import config as cloud_config
from basisit.cloud import plan as cloud_plan
from basisit.cloud.components import (
    Servers,
    ServersArgs,
    SiteDns,
    SiteDnsArgs,
    SiteNetwork,
    SiteNetworkArgs,
    Tenant,
    TenantArgs,
    openstack,
)
from basisit.model import Estate
from basisit.validate import load_estate

INVENTORY = Path(__file__).resolve().parents[2] / "inventory"
HEADROOM = 2  # extra networking objects beyond the plan (operators' debugging ports, ...)


def network_quota(p: cloud_plan.SitePlan) -> dict[str, int]:
    """Neutron quota from the plan: exactly what the program creates plus a little headroom."""
    zones = len(p.zones)
    dhcp_ports = sum(1 for z in p.zones if z.dhcp)
    return {
        "network": zones,
        "subnet": zones,
        "router": 1,
        "port": len(p.ports) + 2 * dhcp_ports + 1 + HEADROOM,  # + up to 2 DHCP agents per network, the router
        "floatingip": 0,
        "security_group": len(p.security_groups) + 1,  # + Neutron's `default` group
        # + the default group's 4 rules, + the 2 default egress rules every new group has until
        # the provider deletes them (groups are created in parallel)
        "security_group_rule": p.rule_count + 4 + 2 * len(p.security_groups) + HEADROOM,
    }


def run(estate: Estate) -> dict[str, pulumi.Input]:
    """Build the tenant of the site named by the stack; return the stack outputs."""
    cfg = cloud_config.load(estate)
    site = estate.site(cfg.site)
    p = cloud_plan.build(estate, site)
    admin = openstack.Provider(f"{site.slug}-admin", cloud=cfg.cloud, region=cfg.region)
    tenant = Tenant(
        f"{site.slug}-tenant", TenantArgs(site=site, config=cfg, admin=admin, network_quota=network_quota(p))
    )
    network = SiteNetwork(f"{site.slug}-network", SiteNetworkArgs(plan=p, config=cfg, provider=tenant.provider))
    hosts = Servers(
        f"{site.slug}-servers",
        ServersArgs(plan=p, config=cfg, provider=tenant.provider, network=network, admins=list(estate.standard.admins)),
    )
    dns = SiteDns(f"{site.slug}-dns-zone", SiteDnsArgs(site=site, provider=tenant.provider))
    return {
        "site": site.slug,
        "project_id": tenant.project.id,
        "zones": {z.name: str(z.network) for z in p.zones},
        "dns_zone": dns.zone.name,
        "site_facts": hosts.site_facts(site, estate.standard.version),
    }


def main(expect_zentral: bool) -> None:
    """Entry point of a project: check the stack fits the project, run, export the outputs."""
    stack = pulumi.get_stack()
    if (stack == "zentral") != expect_zentral:
        project = cloud_config.ZENTRAL_PROJECT if expect_zentral else cloud_config.KOMMUNE_PROJECT
        raise cloud_config.ConfigError(f"stack {stack!r} does not belong to project {project}")
    for name, value in run(load_estate(INVENTORY)).items():
        pulumi.export(name, value)
