"""Run the Pulumi programs under `pulumi.runtime.set_mocks`, one stack after the other in one process.

No Pulumi engine and no OpenStack provider plugin are involved: the mock monitor records every
resource registration (type, name, inputs, provider) and answers the few data-source calls.
Used by tests/unit/test_stacks.py and bench/stacks.py.

Traps this runner closes:
- each stack gets fresh settings (`set_mocks` with its own project and stack name, a new root
  stack) and its own config map (`set_all_config` replaces the whole map and the secret keys),
  so nothing leaks from one stack into the next; PULUMI_CONFIG* in the environment is refused;
- `preview=False`, so ids and outputs are known and `apply` callbacks really run; the outputs
  are awaited and returned, and a run that registered nothing is an error;
- a resource name registered twice in one stack raises (the engine would reject the URN).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as psettings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from basisit.cloud import config as cloud_config
from basisit.model import Estate, Site

EXTERNAL_NETWORK_ID = "mock-external-network-id"
ADMIN_USER_ID = "mock-admin-user-id"


class DuplicateResourceName(Exception):
    """Two resources of one stack got the same name."""


class EmptyRun(Exception):
    """A program registered no resources (e.g. it was imported before set_mocks)."""


@dataclass(frozen=True)
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None
    custom: bool
    id: str


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Records every new_resource; raises on a duplicate name; emulates the provider's computed outputs."""

    resources: list[Recorded] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    preview: bool = False  # like the engine in preview: ids of new resources stay unknown

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if any(r.name == args.name for r in self.resources):
            raise DuplicateResourceName(f"resource name {args.name!r} ({args.typ}) is used twice in one stack")
        rid = f"{args.name}-id"
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), args.provider, bool(args.custom), rid))
        state = dict(args.inputs)
        if args.typ == "openstack:networking/port:Port":
            # What the provider reports after create: the fixed IPs the port really got.
            state["allFixedIps"] = [ip.get("ipAddress") for ip in args.inputs.get("fixedIps", [])]
        return ("" if self.preview else rid), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "openstack:identity/getAuthScope:getAuthScope":
            return {"id": args.args.get("name", "scope"), "userId": ADMIN_USER_ID, "userName": "admin"}, []
        if args.token == "openstack:identity/getRole:getRole":
            return {"id": f"mock-role-{args.args.get('name')}", "name": args.args.get("name")}, []
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": EXTERNAL_NETWORK_ID, "name": args.args.get("name"), "external": True}, []
        raise NotImplementedError(f"no mock for data source {args.token}")

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]


@dataclass
class StackRun:
    project: str
    stack: str
    mocks: RecordingMocks
    outputs: dict[str, Any]
    urns: dict[str, str]  # resource name -> URN (its type chain shows the parent)

    @property
    def resources(self) -> list[Recorded]:
        return self.mocks.resources

    def of_type(self, typ: str) -> list[Recorded]:
        return self.mocks.of_type(typ)


def run_program(
    program: Callable[[], dict[str, Any]],
    project: str,
    stack: str,
    config: dict[str, str],
    preview: bool = False,
) -> StackRun:
    """Run one program as stack `stack` of `project` with exactly `config`; return records and outputs."""
    leaked = sorted(k for k in os.environ if k.startswith("PULUMI_CONFIG"))
    if leaked:
        raise RuntimeError(f"refusing to run with {', '.join(leaked)} set: config would leak into every stack")
    mocks = RecordingMocks(preview=preview)
    psettings.ROOT.set(None)  # a fresh root stack per run
    set_all_config(dict(config), [])
    monitor = pmocks.MockMonitor(mocks)
    pmocks.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor)
    psettings.SETTINGS.rpc_manager.clear()
    psettings.SETTINGS.outputs.clear()
    result: dict[str, Any] = {}

    def body() -> None:
        outputs = program()
        result["outputs"] = _sync_await(pulumi.Output.from_input(outputs).future())

    _sync_await(run_pulumi_func(body))
    if not mocks.resources:
        raise EmptyRun(f"{project}/{stack}: the program registered no resources")
    outputs = result.get("outputs")
    if outputs is None:
        raise EmptyRun(f"{project}/{stack}: the outputs did not resolve (unknown in preview?)")
    urns = {urn.rsplit("::", 1)[1]: urn for urn in monitor.get_registered_resources()}
    return StackRun(project, stack, mocks, outputs, urns)


def stack_config_from_file(site: Site, stacks_dir: Path = cloud_config.STACKS_DIR) -> dict[str, str]:
    """The committed Pulumi.<slug>.yaml as the engine would pass it to the program."""
    doc = yaml.safe_load(cloud_config.stack_file(site, stacks_dir).read_text(encoding="utf-8"))
    return cloud_config.engine_config(site, doc)


def run_site(estate: Estate, site: Site, config: dict[str, str] | None = None) -> StackRun:
    from basisit.cloud import program

    cfg = stack_config_from_file(site) if config is None else config
    return run_program(lambda: program.run(estate), cloud_config.project_of(site), site.slug, cfg)


def run_all(estate: Estate) -> dict[str, StackRun]:
    """Every Kommune stack and zentral, one after the other."""
    return {s.slug: run_site(estate, s) for s in cloud_config.all_sites(estate)}
