"""Policy checks on one mock-run stack (basisit.cloud.mockrun.StackRun).

Each check returns a list of problems (empty = fine), so the same functions prove the 53 real
stacks clean and catch the deliberately broken fixtures in test_stacks.py.
"""

from __future__ import annotations

import ipaddress

import yaml

from basisit import sitefacts
from basisit.cloud import config as cloud_config
from basisit.cloud import mockrun
from basisit.cloud import plan as cloud_plan
from basisit.cloud.mockrun import StackRun
from basisit.model import AUTOMATION_USER, Estate, Site

T_PROJECT = "openstack:identity/project:Project"
T_ROLE = "openstack:identity/roleAssignment:RoleAssignment"
T_QUOTAS = (
    "openstack:compute/quotaSetV2:QuotaSetV2",
    "openstack:networking/quotaV2:QuotaV2",
    "openstack:blockstorage/quoteSetV3:QuoteSetV3",
)
T_PROVIDER = "pulumi:providers:openstack"
T_NETWORK = "openstack:networking/network:Network"
T_SUBNET = "openstack:networking/subnet:Subnet"
T_SG = "openstack:networking/secGroup:SecGroup"
T_RULE = "openstack:networking/secGroupRule:SecGroupRule"
T_PORT = "openstack:networking/port:Port"
T_INSTANCE = "openstack:compute/instance:Instance"
T_VOLUME = "openstack:blockstorage/volume:Volume"
T_ATTACH = "openstack:compute/volumeAttach:VolumeAttach"
T_ROUTER_IF = "openstack:networking/routerInterface:RouterInterface"

# SSH, RDP, SMB/NetBIOS, LDAP(S) and global catalog, Kerberos and kpasswd.
SENSITIVE_PORTS = frozenset({22, 3389, 445, 139, 389, 636, 3268, 3269, 88, 464})
WORLD = ipaddress.IPv4Network("0.0.0.0/0")
SECRET_MARKERS = ("PRIVATE KEY", "password", "plain_text_passwd", "hashed_passwd", "chpasswd", "token", "secret")


def _kommune_blocks(estate: Estate, except_slug: str | None) -> dict[str, ipaddress.IPv4Network]:
    return {s: k.block for s, k in estate.kommunen.items() if s != except_slug and k.block is not None}


def check_ran(run: StackRun) -> list[str]:
    problems = []
    if not run.resources:
        problems.append("no resources registered")
    if not isinstance(run.outputs.get("site_facts"), dict):
        problems.append("site_facts output did not resolve")
    return problems


def check_subnets(site: Site, run: StackRun) -> list[str]:
    problems = []
    planned = {z.name: z for z in site.zones.values() if z.name not in cloud_plan.OVERLAY_ZONES}
    seen = set()
    for r in run.of_type(T_SUBNET):
        zone = r.name.removeprefix(f"{site.slug}-subnet-")
        seen.add(zone)
        if zone not in planned:
            problems.append(f"{r.name}: no zone {zone!r} in the plan")
            continue
        if r.inputs.get("cidr") != str(planned[zone].network):
            problems.append(f"{r.name}: cidr {r.inputs.get('cidr')} differs from the plan ({planned[zone].network})")
        if r.inputs.get("networkId") != f"{site.slug}-net-{zone}-id":
            problems.append(f"{r.name}: on network {r.inputs.get('networkId')}, not {site.slug}-net-{zone}")
    for zone in sorted(set(planned) - seen):
        problems.append(f"zone {zone}: no subnet")
    return problems


def check_fixed_ips(site: Site, run: StackRun) -> list[str]:
    problems = []
    realised = {z for z in site.zones if z not in cloud_plan.OVERLAY_ZONES}
    want = {
        f"{h.name}-{z}": (z, str(a))
        for h in cloud_config.servers(site)
        for z, a in h.addresses.items()
        if z in realised
    }
    got = {r.name: r for r in run.of_type(T_PORT)}
    for name in sorted(set(want) - set(got)):
        problems.append(f"{name}: no port for the model address {want[name][1]}")
    for name, r in sorted(got.items()):
        if name not in want:
            problems.append(f"{name}: a port the model does not have")
            continue
        zone, addr = want[name]
        ips = r.inputs.get("fixedIps") or []
        if [ip.get("ipAddress") for ip in ips] != [addr]:
            problems.append(f"{name}: fixed IPs {[ip.get('ipAddress') for ip in ips]} differ from the model ({addr})")
        if [ip.get("subnetId") for ip in ips] != [f"{site.slug}-subnet-{zone}-id"]:
            problems.append(f"{name}: not on the {zone} subnet")
        pairs = [ipaddress.ip_network(p["ipAddress"]) for p in r.inputs.get("allowedAddressPairs") or []]
        if any(p.prefixlen == 0 for p in pairs):
            problems.append(f"{name}: allowed address pair 0.0.0.0/0 disables anti-spoofing")
    return problems


def _rules_by_group(run: StackRun) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {f"{g.name}-id": [] for g in run.of_type(T_SG)}
    for r in run.of_type(T_RULE):
        groups.setdefault(r.inputs.get("securityGroupId", "?"), []).append(r.inputs)
    return groups


def check_rules(estate: Estate, site: Site, run: StackRun) -> list[str]:
    """No ingress rule is open to the world, to all ports, or (sensitive ports) to another Kommune."""
    problems = []
    foreign = _kommune_blocks(estate, None if site.is_zentral else site.slug)
    for r in run.of_type(T_RULE):
        i = r.inputs
        if i.get("direction") != "ingress":
            if i.get("direction") != "egress":
                problems.append(f"{r.name}: direction {i.get('direction')!r}")
            continue
        if i.get("remoteGroupId"):
            continue
        prefix = i.get("remoteIpPrefix")
        remote = ipaddress.ip_network(prefix) if prefix else WORLD  # no prefix = from anywhere
        lo, hi = i.get("portRangeMin"), i.get("portRangeMax")
        if lo is None or hi is None:
            problems.append(f"{r.name}: ingress without a port range opens every port from {remote}")
            continue
        ports = set(range(int(lo), int(hi) + 1))
        hit = sorted(ports & SENSITIVE_PORTS)
        if remote.prefixlen == 0:
            problems.append(f"{r.name}: ingress {i.get('protocol')}/{lo}-{hi} from 0.0.0.0/0")
            continue
        for slug, block in foreign.items():
            if not remote.overlaps(block):
                continue
            if not site.is_zentral:
                problems.append(f"{r.name}: ingress from {remote}, a network of Kommune {slug}")
            elif hit:
                problems.append(f"{r.name}: {hit} open to {remote}, a network of Kommune {slug}")
    return problems


def check_security_groups(estate: Estate, site: Site, run: StackRun) -> list[str]:
    """Every server carries its roles' groups, and its groups admit exactly what basisit.policy requires."""
    problems = []
    rules = _rules_by_group(run)
    ports = {r.name: r for r in run.of_type(T_PORT)}
    for h in cloud_config.servers(site):
        for p in (p for n, p in ports.items() if n.startswith(f"{h.name}-")):
            groups = p.inputs.get("securityGroupIds") or []
            tg = cloud_plan.transfer_group(h)
            if tg is not None and p.name == f"{h.name}-transfer":
                problems += _check_transfer_port(estate, site, h, p, groups, rules, tg)
                continue
            for role in h.roles:
                if f"{site.slug}-sg-{role}-id" not in groups:
                    problems.append(f"{p.name}: lacks the security group of role {role}")
            admitted = {
                (i["protocol"], int(i["portRangeMin"]), ipaddress.ip_network(i["remoteIpPrefix"]))
                for g in groups
                for i in rules.get(g, [])
                if i.get("direction") == "ingress" and i.get("remoteIpPrefix") and i.get("portRangeMin") is not None
            }
            need = cloud_plan.required(estate, site, h)
            # A rule to `any` also names the source host itself (zentral-mgmt-ssh on the mgmt host):
            # traffic from a host to itself never crosses its port, so that rule admits nothing.
            own = {ipaddress.ip_network(a) for a in h.addresses.values()}
            admitted = {k for k in admitted if k[2] not in own}
            for k in sorted(need - admitted):
                problems.append(f"{p.name}: policy flow {k[0]}/{k[1]} from {k[2]} not admitted")
            for k in sorted(admitted - need):
                problems.append(f"{p.name}: admits {k[0]}/{k[1]} from {k[2]}, which no policy flow needs")
    return problems


def _check_transfer_port(estate, site, h, p, groups, rules, tg) -> list[str]:
    """A gateway's transfer port: its own group only, ingress and egress exactly the underlay flows."""
    if groups != [f"{tg}-id"]:
        return [f"{p.name}: groups {groups}; the transfer link must carry only {tg}"]
    got = {"ingress": set(), "egress": set()}
    problems = []
    for i in rules.get(f"{tg}-id", []):
        if i.get("portRangeMin") is None or not i.get("remoteIpPrefix"):
            problems.append(f"{p.name}: {i.get('direction')} rule without a port or remote: {i}")
            continue
        got.setdefault(i.get("direction"), set()).add(
            (i["protocol"], int(i["portRangeMin"]), ipaddress.ip_network(i["remoteIpPrefix"]))
        )
    want = {
        "ingress": cloud_plan.transfer_required(estate, site, h),
        "egress": cloud_plan.transfer_egress(estate, site, h),
    }
    for d in ("ingress", "egress"):
        for k in sorted(got[d] - want[d]):
            problems.append(f"{p.name}: {d} {k[0]}/{k[1]} {k[2]}, which no underlay flow needs")
        for k in sorted(want[d] - got[d]):
            problems.append(f"{p.name}: underlay flow {k[0]}/{k[1]} {k[2]} ({d}) not admitted")
    return problems


def check_volumes(site: Site, run: StackRun, cfg: dict) -> list[str]:
    problems = []
    sizes = cfg.get("volumes", {})
    volumes = {r.name: r for r in run.of_type(T_VOLUME)}
    attaches = {r.name: r for r in run.of_type(T_ATTACH)}
    instances = {r.name for r in run.of_type(T_INSTANCE)}
    for h in cloud_config.servers(site):
        if h.name not in instances:
            problems.append(f"{h.name}: no instance")
        gb = max((sizes.get(r, 0) for r in h.roles), default=0)
        v = volumes.pop(f"{h.name}-data", None)
        a = attaches.pop(f"{h.name}-data-attach", None)
        if gb == 0:
            if v or a:
                problems.append(f"{h.name}: a data volume the config does not ask for")
            continue
        if v is None or a is None:
            problems.append(f"{h.name}: config asks for a {gb} GiB data volume; volume or attachment missing")
            continue
        if v.inputs.get("size") != gb:
            problems.append(f"{v.name}: {v.inputs.get('size')} GiB, config says {gb}")
        if a.inputs.get("instanceId") != f"{h.name}-id" or a.inputs.get("volumeId") != v.id:
            problems.append(f"{a.name}: attaches {a.inputs.get('volumeId')} to {a.inputs.get('instanceId')}")
    problems += [f"{n}: volume of no server" for n in volumes]
    return problems


def check_instances(site: Site, run: StackRun, cfg: dict) -> list[str]:
    """Image, flavor and availability zone are the stack's own config (catches config leaking between stacks)."""
    problems = []
    hosts = {h.name: h for h in cloud_config.servers(site)}
    for r in run.of_type(T_INSTANCE):
        h = hosts.get(r.name)
        if h is None:
            problems.append(f"{r.name}: an instance the model does not have")
            continue
        want = {
            "imageName": cfg["image"],
            "flavorName": cfg["flavors"].get(h.roles[0]),
            "availabilityZone": cfg["availabilityZone"],
        }
        for key, value in want.items():
            if r.inputs.get(key) != value:
                problems.append(f"{r.name}: {key} {r.inputs.get(key)!r}, stack config says {value!r}")
        ports = [n["port"] for n in r.inputs.get("networks", [])]
        if not ports or ports[0] != f"{h.name}-{h.primary_zone}-id":
            problems.append(f"{r.name}: first NIC is not its {h.primary_zone} port ({ports})")
    return problems


def check_names(site: Site, run: StackRun) -> list[str]:
    """Logical names start with the slug; physical names carry it too."""
    problems = []
    for r in run.resources:
        if not r.name.startswith(f"{site.slug}-"):
            problems.append(f"{r.typ} {r.name}: name does not start with {site.slug}-")
        phys = r.inputs.get("name")
        if isinstance(phys, str) and site.slug not in phys and r.typ != "openstack:dns/recordSet:RecordSet":
            problems.append(f"{r.name}: physical name {phys!r} does not carry {site.slug}")
    return problems


def check_providers_and_parents(site: Site, run: StackRun) -> list[str]:
    problems = []
    admin = f"{site.slug}-admin"
    tenant = f"{site.slug}-project-provider"
    admin_types = {T_PROJECT, T_ROLE, *T_QUOTAS}
    for r in run.resources:
        if not r.custom:
            continue
        urn_type = run.urns[r.name].split("::")[2]
        if r.name != admin and not urn_type.startswith("basisit:cloud:"):
            problems.append(f"{r.name}: not a child of a basisit component ({urn_type})")
        if r.typ == T_PROVIDER:
            continue
        want = admin if r.typ in admin_types else tenant
        if (r.provider or "").split("::")[-2:-1] != [want]:
            problems.append(f"{r.name}: created by provider {r.provider}, expected {want}")
    prov = [r for r in run.of_type(T_PROVIDER) if r.name == tenant]
    if not prov or prov[0].inputs.get("tenantId") != f"{site.slug}-project-id":
        problems.append(f"{tenant}: not scoped to the project {site.slug}-project")
    return problems


def check_user_data(estate: Estate, run: StackRun) -> list[str]:
    problems = []
    for r in run.of_type(T_INSTANCE):
        ud = r.inputs.get("userData") or ""
        if not ud.startswith("#cloud-config\n"):
            problems.append(f"{r.name}: user data is not cloud-config")
        doc = yaml.safe_load(ud) if ud.startswith("#cloud-config\n") else {}
        auto = [u for u in doc.get("users", []) if u.get("name") == AUTOMATION_USER]
        if not auto or auto[0].get("ssh_authorized_keys") != [mockrun.MOCK_AUTOMATION_KEY]:
            problems.append(
                f"{r.name}: automation account {AUTOMATION_USER} with the stack's key missing from cloud-init"
            )
        if doc.get("disable_root") is not True:
            problems.append(f"{r.name}: cloud-init leaves root login enabled")
        for a in estate.standard.admins:
            if f"name: {a.name}" not in ud:
                problems.append(f"{r.name}: admin {a.name} missing from cloud-init")
            for key in a.ssh_keys:
                if key not in ud:
                    problems.append(f"{r.name}: a key of {a.name} missing from cloud-init")
        for m in SECRET_MARKERS:
            if m.lower() in ud.lower():
                problems.append(f"{r.name}: user data contains {m!r}")
    return problems


def check_facts(site: Site, run: StackRun) -> list[str]:
    doc = run.outputs.get("site_facts")
    if not isinstance(doc, dict):
        return ["site_facts output missing"]
    try:
        sitefacts.validate(doc, f"{site.slug} site_facts")
        sitefacts.check_against_model(doc, site, f"{site.slug} site_facts")
    except sitefacts.FactsError as e:
        return str(e).splitlines()
    problems = []
    if doc.get("backend") != "cloud":
        problems.append(f"backend {doc.get('backend')!r}, expected cloud")
    if doc.get("ssh", {}).get("user") != AUTOMATION_USER:
        problems.append(
            f"ssh user {doc.get('ssh', {}).get('user')!r}, expected the automation account {AUTOMATION_USER}"
        )
    servers = {h.name: h for h in cloud_config.servers(site)}
    if set(doc["hosts"]) != set(servers):
        problems.append(f"hosts {sorted(doc['hosts'])} differ from the servers {sorted(servers)}")
    for name, h in doc["hosts"].items():
        if name in servers and h["ansible_host"] != str(servers[name].address):
            problems.append(f"{name}: ansible_host {h['ansible_host']} is not the primary address")
    return problems


def check_all(estate: Estate, site: Site, run: StackRun, cfg: dict) -> list[str]:
    return [
        *check_ran(run),
        *check_subnets(site, run),
        *check_fixed_ips(site, run),
        *check_rules(estate, site, run),
        *check_security_groups(estate, site, run),
        *check_volumes(site, run, cfg),
        *check_instances(site, run, cfg),
        *check_names(site, run),
        *check_providers_and_parents(site, run),
        *check_user_data(estate, run),
        *check_facts(site, run),
    ]
