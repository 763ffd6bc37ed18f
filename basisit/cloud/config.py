"""Stack configuration: the one place the Pulumi programs read config, and its generator.

A stack's config (`stacks/<project>/Pulumi.<stack>.yaml`) holds only cloud specifics: which
clouds.yaml entry to use, region, image, flavor per role, data volume size per role, external
network, availability zone, compute quota; and, set by the operator (not generated, kept by the
generator), `automationSshKeys`: the public key(s) Ansible and `basisit verify` log in with as the
automation account (cloud-init gives it to that account). Everything about the site itself (zones, hosts,
addresses, allow matrix) comes from the model, never from config.

`stack_config()` generates a stack's config from the model and the defaults tables below;
`basisit stacks config` writes the files and `--check` proves they are in sync. To change a
default for every Kommune, change the table and regenerate; to change one Kommune, set
`size:` in its inventory file (flavors and volumes follow the size class).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from basisit.model import AUTOMATION_USER, Estate, Host, Site

KOMMUNE_PROJECT = "basisit-kommune"
ZENTRAL_PROJECT = "basisit-zentral"
STACKS_DIR = Path(__file__).resolve().parents[2] / "stacks"

# --- defaults tables (the generator's input; edit here, then `basisit stacks config`) ------

CLOUD = "verwaltungscloud-admin"  # clouds.yaml entry holding the admin credentials (not in git)
REGION = "RegionOne"
IMAGE = "debian-12-genericcloud-amd64"
EXTERNAL_NETWORK = "public"
AVAILABILITY_ZONE = "nova"
MEMBER_ROLE = "member"
# Set per stack by the operator (`pulumi config set --path 'automationSshKeys[0]' "$(cat KEY.pub)"`);
# the generator keeps it. Public keys only: the private key stays with the control host (AWX).
AUTOMATION_KEYS = "automationSshKeys"
OPERATOR_KEYS = (AUTOMATION_KEYS,)  # config keys the operator sets per stack (no default, not generated)
SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+( [^\n]*)?$")

# Flavor per primary role (first role of a host kind) and size class; "*" = every size class.
FLAVORS: dict[str, dict[str, str]] = {
    "gateway": {"*": "b1.small"},
    "ad_dc": {"S": "b1.medium", "M": "b1.medium", "L": "b1.large"},
    "file_server": {"M": "b1.large", "L": "b1.xlarge"},
    "zentral_gateway": {"*": "b1.medium"},
    "mgmt_host": {"*": "b1.small"},
    "backup_server": {"*": "b1.large"},
    "log_host": {"*": "b1.medium"},
}
# vCPUs and RAM (MiB) per flavor: only to compute the compute quota.
FLAVOR_SIZES: dict[str, tuple[int, int]] = {
    "b1.small": (1, 2048),
    "b1.medium": (2, 4096),
    "b1.large": (4, 8192),
    "b1.xlarge": (8, 16384),
}
# Data volume (GiB) per role and size class; a host gets one data volume, the largest of its roles.
VOLUMES: dict[str, dict[str, int]] = {
    "ad_dc": {"*": 20},
    "file_server": {"M": 250, "L": 500},
    "backup_server": {"*": 4000},  # the central restic repository
    "log_host": {"*": 200},
}
QUOTA_HEADROOM = {"instances": 1, "cores": 2, "ram_mb": 4096, "volumes": 1, "gigabytes": 50}


class ConfigError(ValueError):
    """The stack's config is missing a key or does not fit the model."""


@dataclass(frozen=True)
class Quota:
    instances: int
    cores: int
    ram_mb: int
    volumes: int
    gigabytes: int


@dataclass(frozen=True)
class CloudConfig:
    """Everything a program reads from its stack config."""

    site: str  # the stack name: a Kommune slug, or "zentral"
    cloud: str
    region: str
    image: str
    external_network: str
    availability_zone: str
    member_role: str
    flavors: dict[str, str]  # primary role -> flavor name
    volumes: dict[str, int]  # role -> GiB
    volume_type: str | None
    quota: Quota
    automation_keys: tuple[str, ...] = ()  # the automation account's public keys (cloud-init)

    def flavor(self, host: Host) -> str:
        role = host.roles[0]
        if role not in self.flavors:
            raise ConfigError(
                f"stack {self.site}: no flavor for role {role!r} (host {host.name}); set `flavors.{role}`"
            )
        return self.flavors[role]

    def volume_gb(self, host: Host) -> int:
        return max((self.volumes.get(r, 0) for r in host.roles), default=0)


def servers(site: Site) -> list[Host]:
    """The hosts the cloud creates: servers only. Endpoints (kind `ep`) are workstations, not instances."""
    return [h for h in site.hosts if h.kind != "ep"]


def _pick(table: dict[str, str] | dict[str, int], size: str | None) -> Any:
    if "*" in table:
        return table["*"]
    return table.get(size or "", None)


def defaults(site: Site) -> dict[str, Any]:
    """A site's stack config as plain data (keys without the project namespace)."""
    hosts = servers(site)
    flavors: dict[str, str] = {}
    volumes: dict[str, int] = {}
    for h in hosts:
        role = h.roles[0]
        flavor = _pick(FLAVORS.get(role, {}), site.size)
        if flavor is None:
            raise ConfigError(f"{site.slug}: FLAVORS has no flavor for role {role!r} in size class {site.size}")
        flavors[role] = flavor
        for r in h.roles:
            gb = _pick(VOLUMES.get(r, {}), site.size)
            if gb:
                volumes[r] = gb
    vols = [max((volumes.get(r, 0) for r in h.roles), default=0) for h in hosts]
    sizes = [FLAVOR_SIZES[flavors[h.roles[0]]] for h in hosts]
    hr = QUOTA_HEADROOM
    quota = {
        "instances": len(hosts) + hr["instances"],
        "cores": sum(c for c, _ in sizes) + hr["cores"],
        "ramMb": sum(m for _, m in sizes) + hr["ram_mb"],
        "volumes": sum(1 for v in vols if v) + hr["volumes"],
        "gigabytes": sum(vols) + hr["gigabytes"],
    }
    return {
        "cloud": CLOUD,
        "region": REGION,
        "image": IMAGE,
        "externalNetwork": EXTERNAL_NETWORK,
        "availabilityZone": AVAILABILITY_ZONE,
        "memberRole": MEMBER_ROLE,
        "flavors": dict(sorted(flavors.items())),
        "volumes": dict(sorted(volumes.items())),
        "quota": quota,
    }


def project_of(site: Site) -> str:
    return ZENTRAL_PROJECT if site.is_zentral else KOMMUNE_PROJECT


def stack_file(site: Site, stacks_dir: Path = STACKS_DIR) -> Path:
    sub = "zentral" if site.is_zentral else "kommune"
    return stacks_dir / sub / f"Pulumi.{site.slug}.yaml"


def stack_config(site: Site) -> dict[str, Any]:
    """The namespaced config map of a stack, as in Pulumi.<stack>.yaml (`config:`)."""
    project = project_of(site)
    return {f"{project}:{k}": v for k, v in defaults(site).items()}


# Keys `pulumi stack init` / `pulumi stack change-secrets-provider` write into a stack file; the
# generator keeps them, so an initialised stack stays in sync.
ENGINE_KEYS = ("secretsprovider", "encryptedkey", "encryptionsalt")


def render(site: Site, existing: str | None = None) -> str:
    """The text of Pulumi.<slug>.yaml (yamllint-clean, stable), keeping the engine's keys of `existing`."""
    doc: dict[str, Any] = {}
    if existing:
        old = yaml.safe_load(existing) or {}
        doc.update({k: old[k] for k in ENGINE_KEYS if k in old})
    doc["config"] = stack_config(site)
    kept = f"{project_of(site)}:{AUTOMATION_KEYS}"
    if existing and kept in ((yaml.safe_load(existing) or {}).get("config") or {}):
        doc["config"][kept] = yaml.safe_load(existing)["config"][kept]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, indent=2, width=1000)
    head = (
        "---\n"
        f"# Stack {site.slug} ({site.name}): cloud specifics only; the site itself comes from inventory/.\n"
        "# Generated by `basisit stacks config` from basisit/cloud/config.py; do not edit by hand.\n"
    )
    return head + body


def engine_config(site: Site, doc: dict[str, Any] | None = None) -> dict[str, str]:
    """A stack config the way the engine hands it to a program: every value a string, objects as JSON."""
    cfg = doc["config"] if doc is not None else stack_config(site)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()}


def all_sites(estate: Estate) -> list[Site]:
    return [estate.zentral, *estate.kommunen.values()]


# --- the program side: read the config of the running stack --------------------------------


def load(estate: Estate) -> CloudConfig:
    """Read the running stack's config (pulumi.Config of the project). The stack name is the site."""
    import pulumi

    stack = pulumi.get_stack()
    if stack != "zentral" and stack not in estate.kommunen:
        raise ConfigError(f"stack {stack!r} is not a Kommune slug from inventory/kommunen/ (nor 'zentral')")
    c = pulumi.Config()
    q = c.require_object("quota")
    try:
        quota = Quota(
            instances=int(q["instances"]),
            cores=int(q["cores"]),
            ram_mb=int(q["ramMb"]),
            volumes=int(q["volumes"]),
            gigabytes=int(q["gigabytes"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"stack {stack}: quota needs instances, cores, ramMb, volumes, gigabytes ({e})") from e
    return CloudConfig(
        site=stack,
        cloud=c.require("cloud"),
        region=c.require("region"),
        image=c.require("image"),
        external_network=c.require("externalNetwork"),
        availability_zone=c.require("availabilityZone"),
        member_role=c.get("memberRole") or MEMBER_ROLE,
        flavors={str(k): str(v) for k, v in c.require_object("flavors").items()},
        volumes={str(k): int(v) for k, v in (c.get_object("volumes") or {}).items()},
        volume_type=c.get("volumeType") or None,
        quota=quota,
        automation_keys=automation_keys(stack, c.get_object(AUTOMATION_KEYS)),
    )


def automation_keys(stack: str, value: Any) -> tuple[str, ...]:
    """The stack's `automationSshKeys`: a non-empty list of SSH public keys; ConfigError otherwise
    (without them no host of the stack could be reached by Ansible)."""
    how = f"pulumi config set --path '{AUTOMATION_KEYS}[0]' \"$(cat KEY.pub)\""
    if not value:
        raise ConfigError(
            f"stack {stack}: no {AUTOMATION_KEYS}: the public key(s) Ansible and verify log in with as "
            f"{AUTOMATION_USER}; set it with `{how}`"
        )
    if not isinstance(value, list) or not all(isinstance(k, str) and SSH_PUBLIC_KEY.match(k.strip()) for k in value):
        raise ConfigError(f"stack {stack}: {AUTOMATION_KEYS} must be a list of SSH public keys (`{how}`)")
    return tuple(k.strip() for k in value)
