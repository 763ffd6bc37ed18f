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

Speed (bench/stacks.py): the run is the SDK's own work per resource; four costs of it that
change nothing in what is registered are cut while a mock run lasts (`fast_runtime`):
- the cyclic garbage collector: the runtime leaves ≈ 110 objects of cyclic garbage per resource
  (each Output's task and coroutine); with the default thresholds that triggered a collection
  every 700 allocations and, every hundred or so, one over everything alive (the model, every
  imported module). It is paused while a stack runs and the young generation collected once after;
- `pulumi.runtime.rpc.contains_unknowns` built a recursive closure per call (≈ 190 more objects
  of cyclic garbage per resource): replaced by the same walk as a module-level function;
- `pulumi.runtime.resource._get_stack_trace` (the source position sent with every registration)
  read every frame's source line and built a `pathlib.Path` per frame: replaced by a walk that
  builds the same message from the frames, with each file's URI computed once;
- every monitor call went through a thread pool (`run_in_executor`): the mock monitor answers
  at once, so it is called inline (`InlineExecutor`), in the order the runtime asks.
tests/unit/test_mockrun.py proves the replacements return what the SDK's own functions return;
tests/unit/test_stacks.py checks the same policy on what the 53 stacks register.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import os
import pathlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import known_types as pknown_types
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import resource as presource
from pulumi.runtime import rpc as prpc
from pulumi.runtime import settings as psettings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

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
    names: set[str] = field(default_factory=set)  # of the resources, for the duplicate check
    preview: bool = False  # like the engine in preview: ids of new resources stay unknown

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if args.name in self.names:
            raise DuplicateResourceName(f"resource name {args.name!r} ({args.typ}) is used twice in one stack")
        self.names.add(args.name)
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


def contains_unknowns(val: Any) -> bool:
    """`pulumi.runtime.rpc.contains_unknowns` without a closure per call (the same walk)."""
    return _unknowns_in(val, set())


def _unknowns_in(val: Any, seen_ids: set[int]) -> bool:
    if pknown_types.is_unknown(val):
        return True
    val_id = id(val)
    if val_id in seen_ids:
        return False
    seen_ids.add(val_id)
    if isinstance(val, dict):
        return any(_unknowns_in(val[k], seen_ids) for k in val)
    if isinstance(val, list):
        return any(_unknowns_in(x, seen_ids) for x in val)
    return False


_POSITIONS: dict[tuple[str, int | None], source_pb2.SourcePosition | None] = {}


def _source_position(filename: str, lineno: int | None) -> source_pb2.SourcePosition | None:
    """`pulumi.runtime.resource._get_source_position_for_frame`, memoised per file and line."""
    key = (filename, lineno)
    if key not in _POSITIONS:
        pos = None
        if filename != "" and lineno is not None:
            try:
                pos = source_pb2.SourcePosition(uri=pathlib.Path(filename).as_uri(), line=lineno)
            except ValueError:  # a relative path (a frozen module) has no URI
                pos = None
        _POSITIONS[key] = pos
    return _POSITIONS[key]


def stack_trace() -> source_pb2.StackTrace:
    """`pulumi.runtime.resource._get_stack_trace` from the frames, without reading source lines.

    The SDK's version: the frames outside the third `__init__` from the top (Resource, Custom- or
    ComponentResource, the concrete class), innermost first; an empty trace without one.
    """
    f = sys._getframe(1)
    n = 0
    while f is not None:
        if f.f_code.co_name == "__init__":
            n += 1
            if n == 3:
                break
        f = f.f_back
    if f is None or f.f_back is None:
        return source_pb2.StackTrace()
    frames = []
    f = f.f_back
    while f is not None:
        frames.append(source_pb2.StackFrame(pc=_source_position(f.f_code.co_filename, f.f_lineno)))
        f = f.f_back
    return source_pb2.StackTrace(frames=frames)


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs the SDK's monitor calls (`run_in_executor`) on the calling thread, one at a time.

    The mock monitor answers at once, so a worker thread only adds a hand-over per call. The
    monitor awaits its own serialisation with `_sync_await`; it gets a private event loop for
    that, as a worker thread would, and the outer loop is back in place when the call returns.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)  # the type the loop requires; no thread is ever started
        self._loop = asyncio.new_event_loop()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        running = asyncio.events._get_running_loop()
        policy = asyncio.get_event_loop_policy()
        outer = policy.get_event_loop()
        asyncio.events._set_running_loop(None)
        policy.set_event_loop(self._loop)
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to the awaiting coroutine, as a worker thread does
            fut.set_exception(e)
        finally:
            policy.set_event_loop(outer)
            asyncio.events._set_running_loop(running)
        return fut


_INLINE: InlineExecutor | None = None


@contextmanager
def fast_runtime() -> Iterator[None]:
    """While one stack runs: the collector paused (young generation collected once after), the
    monitor called inline, and the SDK's `contains_unknowns` and `_get_stack_trace` replaced by
    the equivalents above."""
    global _INLINE
    if _INLINE is None:
        _INLINE = InlineExecutor()
    loop = _ensure_event_loop()
    executor = getattr(loop, "_default_executor", None)
    loop.set_default_executor(_INLINE)
    saved = prpc.contains_unknowns, presource._get_stack_trace
    prpc.contains_unknowns, presource._get_stack_trace = contains_unknowns, stack_trace
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        prpc.contains_unknowns, presource._get_stack_trace = saved
        loop._default_executor = executor
        if enabled:
            gc.enable()
            gc.collect(0)


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

    with fast_runtime():
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


# The committed stack files do not carry the operator's automation key (set per stack with
# `pulumi config set`); the mocks run with this public test key unless a config says otherwise.
MOCK_AUTOMATION_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockAutomationKeyForTheStackTestsOnly000000 mock"


def with_automation_key(site: Site, cfg: dict[str, str]) -> dict[str, str]:
    """cfg with MOCK_AUTOMATION_KEY as the automation key when it sets none."""
    key = f"{cloud_config.project_of(site)}:{cloud_config.AUTOMATION_KEYS}"
    return cfg if key in cfg else {**cfg, key: json.dumps([MOCK_AUTOMATION_KEY])}


def run_site(estate: Estate, site: Site, config: dict[str, str] | None = None) -> StackRun:
    from basisit.cloud import program

    cfg = with_automation_key(site, stack_config_from_file(site)) if config is None else config
    return run_program(lambda: program.run(estate), cloud_config.project_of(site), site.slug, cfg)


def run_all(estate: Estate) -> dict[str, StackRun]:
    """Every Kommune stack and zentral, one after the other."""
    return {s.slug: run_site(estate, s) for s in cloud_config.all_sites(estate)}
