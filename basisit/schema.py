"""Schemas of the inventory files as written by people (inventory/*.yaml).

These pydantic models check shape and types only (missing, unknown and mistyped fields).
Cross-file rules (duplicates, overlaps, references to the standard) live in basisit.validate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

SIZE_CLASSES = ("S", "M", "L")
ZONE_NAMES = ("management", "server", "transfer", "client")
HOSTNAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SLUG_RE = r"^[a-z0-9]+(-[a-z0-9]+)*$"

Size = Literal["S", "M", "L"]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
WaveName = StrictStr | StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- standard.yaml -------------------------------------------------------------------------


class SizeClassSpec(Strict):
    max_population: StrictInt | None


class ZoneSpec(Strict):
    prefix: Annotated[StrictInt, Field(ge=8, le=30)]
    index: Annotated[StrictInt, Field(ge=0)]
    description: StrictStr


class AddressingSpec(Strict):
    supernet: ipaddress.IPv4Network
    block_prefix: Annotated[StrictInt, Field(ge=8, le=28)]
    zones: dict[Literal["management", "server", "transfer", "client"], ZoneSpec]
    gateway_host: Annotated[StrictInt, Field(ge=1)]
    transfer_zentral_host: Annotated[StrictInt, Field(ge=1)]
    transfer_gateway_host: Annotated[StrictInt, Field(ge=1)]
    endpoint_first_host: Annotated[StrictInt, Field(ge=1)]


class HostKindSpec(Strict):
    zone: Literal["management", "server", "transfer", "client"]
    host: Annotated[StrictInt, Field(ge=1)] | None = None
    roles: list[StrictStr]
    count: dict[Size, Annotated[StrictInt, Field(ge=0, le=9)]]


class EndpointSpec(Strict):
    roles: list[StrictStr]
    lab_cap: Annotated[StrictInt, Field(ge=0)]
    os: list[StrictStr]


class BackupSpec(Strict):
    schedule: StrictStr
    randomized_delay: StrictStr
    rpo_hours: Annotated[StrictInt, Field(ge=1)]
    retention: dict[Literal["keep_daily", "keep_weekly", "keep_monthly"], Annotated[StrictInt, Field(ge=0)]]
    repository_port: Port


class PasswordPolicySpec(Strict):
    min_length: Annotated[StrictInt, Field(ge=8, le=255)]
    complexity: StrictBool
    history_length: Annotated[StrictInt, Field(ge=0, le=24)]
    max_age_days: Annotated[StrictInt, Field(ge=0)]
    min_age_days: Annotated[StrictInt, Field(ge=0)]


class LockoutSpec(Strict):
    threshold: Annotated[StrictInt, Field(ge=1)]
    duration_minutes: Annotated[StrictInt, Field(ge=1)]
    observation_window_minutes: Annotated[StrictInt, Field(ge=1)]


class NtpSpec(Strict):
    servers: list[StrictStr]


class DnsSpec(Strict):
    forwarders: list[ipaddress.IPv4Address]


class AdSpec(Strict):
    domain_suffix: StrictStr
    function_level: StrictStr
    ous: list[StrictStr]
    groups: list[StrictStr]


class PatchingSpec(Strict):
    # The Debian archive and security archive every host's apt names (through zentral's package
    # proxy, which fetches from these hosts only).
    mirror: Annotated[StrictStr, Field(pattern=r"^http://[a-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")]
    security_mirror: Annotated[StrictStr, Field(pattern=r"^http://[a-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")]
    # A security update may be pending on a host for at most this many days.
    max_pending_security_days: Annotated[StrictInt, Field(ge=0)]
    # The last successful unattended-upgrades run is at most this many hours old.
    max_upgrade_age_hours: Annotated[StrictInt, Field(ge=1)]


class ServicesSpec(Strict):
    backup: BackupSpec
    patching: PatchingSpec
    password_policy: PasswordPolicySpec
    lockout: LockoutSpec
    ntp: NtpSpec
    dns: DnsSpec
    ad: AdSpec


class AdminSpec(Strict):
    name: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9-]{1,31}$")]
    full_name: StrictStr
    uid: Annotated[StrictInt, Field(ge=1000, le=59999)]
    ssh_keys: list[Annotated[StrictStr, Field(pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) \S+")]]


class AdminSudoSpec(Strict):
    # Admins' sudo asks for their password unless this says otherwise, with a reason (validate).
    nopasswd: bool = Field(default=False, strict=True)
    reason: StrictStr | None = None


class AccessSpec(Strict):
    admin_sudo: AdminSudoSpec = AdminSudoSpec()


class AllowRule(Strict):
    name: Annotated[StrictStr, Field(pattern=SLUG_RE)]
    # pydantic keyword clash: YAML key `from` maps to `src`
    src: StrictStr = Field(alias="from")
    to: StrictStr
    proto: list[Literal["tcp", "udp"]]
    ports: list[Port]
    # May cross the transfer link (the tunnel's underlay) in clear: only the tunnel itself and
    # the SSH that builds or repairs it. Every other flow between a site and zentral is routed
    # through the WireGuard tunnel (basisit.policy.underlay_rules).
    underlay: StrictBool = False


class StandardFile(Strict):
    version: Annotated[StrictInt, Field(ge=1)]
    size_classes: dict[Size, SizeClassSpec]
    waves: list[WaveName]
    addressing: AddressingSpec
    host_kinds: dict[Annotated[StrictStr, Field(pattern=r"^[a-z]{1,4}$")], HostKindSpec]
    endpoints: EndpointSpec
    services: ServicesSpec
    admins: list[AdminSpec]
    access: AccessSpec = AccessSpec()
    allow: list[AllowRule]


# --- zentral.yaml --------------------------------------------------------------------------


class ZentralZone(Strict):
    cidr: ipaddress.IPv4Network
    description: StrictStr


class ZentralHost(Strict):
    name: Annotated[StrictStr, Field(pattern=HOSTNAME_RE)]
    roles: list[StrictStr]
    addresses: dict[StrictStr, Annotated[StrictInt, Field(ge=1)]]


class ZentralFile(Strict):
    name: StrictStr
    slug: Literal["zentral"]
    domain: StrictStr
    zones: dict[Annotated[StrictStr, Field(pattern=r"^[a-z]+$")], ZentralZone]
    hosts: list[ZentralHost]


# --- kommunen/<slug>.yaml ------------------------------------------------------------------


class Population(Strict):
    count: StrictInt
    date: dt.date


class Endpoint(Strict):
    hostname: StrictStr
    index: Annotated[StrictInt, Field(ge=1)]
    asset_tag: Annotated[StrictStr, Field(min_length=1)]
    department: Annotated[StrictStr, Field(min_length=1)]
    os: StrictStr


class KommuneFile(Strict):
    slug: StrictStr
    ags: StrictStr
    name: Annotated[StrictStr, Field(min_length=1)]
    kind: Literal["Landeshauptstadt", "Kreisstadt", "Mittelstadt", "Stadt", "Gemeinde"]
    district: Annotated[StrictStr, Field(min_length=1)]
    population: Population
    wave: WaveName
    size: StrictStr | None = None
    net_index: StrictInt
    ad_domain: StrictStr
    netbios: StrictStr
    endpoints: list[Endpoint] = []
    # `retired`: the Kommune left the estate (`basisit retire`): no hosts, no peer, no credential
    # on zentral; its net_index, AGS and names stay reserved while its backups are kept.
    status: Literal["active", "retired"] = "active"
