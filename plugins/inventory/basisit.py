"""Ansible inventory plugin: the basisit model (plus site facts) as Ansible inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
name: basisit
short_description: Kommunen, zentral and their hosts from the basisit model
description:
  - Loads and validates the basisit inventory (standard.yaml, zentral.yaml, kommunen/*.yaml) with
    the same Python model every other part of basisit uses, and adds every host with its model
    as hostvars.
  - Derived data only some roles need (a host's input rule set, a router's forward rule set, the
    VPN hub's peers) is not copied into hostvars; the lookup C(basisit_model) computes it where
    a role asks, from the inventory directory in C(basisit_inventory_dir).
  - Groups per Kommune (the slug), per district, per wave, per size class and per role, plus
    C(kommunen) and C(zentral).
  - C(ansible_host) and the SSH settings come from the site facts written by C(basisit lab up) or
    C(basisit facts import) when they exist; otherwise the planned address is used. Hosts that a
    site's facts do not list (e.g. endpoints beyond the lab's cap) go to group C(not_realised).
  - Realised hosts are reached as the facts' SSH user, the automation account
    (C(basisit_automation_user)), with C(ansible_become) (sudo) when the facts name a user other than root.
  - Constructable (C(compose), C(groups), C(keyed_groups), C(strict)) over every host's variables,
    including its site group's C(basisit_site); Cacheable (C(cache), C(cache_plugin),
    C(cache_timeout), C(cache_connection)), keyed on the content of every file of the inventory
    directory, of the site facts and of the basisit code (package and this plugin), so an edit
    invalidates the cache and an invalid inventory is never served from it.
  - Without C(cache_connection) the cache lives in C(<state_dir>/cache/inventory) (a relative
    C(cache_connection) is relative to this file); if that directory cannot be written, the
    inventory is loaded without a cache. One entry per inventory directory and state directory
    is kept, a new one replaces the older ones.
  - As a collection plugin its name is C(egosaar.basisit.basisit); the short name C(basisit) works
    where C(inventory_plugins) points at C(plugins/inventory) (the repository's ansible.cfg).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as a basisit inventory source.
    required: true
    choices: [basisit, egosaar.basisit.basisit]
  inventory_dir:
    description:
      - The basisit inventory directory; relative paths are relative to this file.
      - The source file is C(basisit.yml) in that directory, or C(<name>.basisit.yml) anywhere.
    type: str
    default: .
  state_dir:
    description: The basisit state directory holding C(facts/<site>.json).
    type: str
    env:
      - name: BASISIT_STATE
    default: ../.basisit
"""

EXAMPLES = r"""
# An AWX inventory source (the collection egosaar.basisit and the basisit wheel installed);
# the repository's inventory/basisit.yml says `plugin: basisit` (ansible.cfg: inventory_plugins).
plugin: egosaar.basisit.basisit
keyed_groups:
  - key: basisit_host.asset.os | default('')
    prefix: os
compose:
  basisit_kommune: basisit_site.slug
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/basisit-inventory
"""

import contextlib
import hashlib
import os
import re
import sys
from pathlib import Path

from ansible import context
from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.vars import combine_vars

# Only the package itself here: the model (pydantic, jsonschema: ~0.3 s of imports) is imported
# when the inventory is loaded (`load_estate`, `_populate`), not when it is served from the cache.
try:
    import basisit
except ImportError as e:  # pragma: no cover - reported to the user by Ansible
    _IMPORT_ERROR: Exception | None = e
else:
    _IMPORT_ERROR = None

display = Display()


def load_estate(inv_dir: str):
    """basisit.validate.load_estate, imported on first use."""
    from basisit.validate import load_estate as load

    return load(inv_dir)


def group_name(*parts: object) -> str:
    """A valid Ansible group name: lower case, [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", "_".join(str(p) for p in parts).lower()).strip("_")


# The names a basisit.yml may give: the collection's FQCN and the short name the repository's
# ansible.cfg resolves through inventory_plugins.
PLUGIN_NAMES = ("egosaar.basisit.basisit", "basisit")


class _Recorder:
    """Records what the plugin adds to the inventory, so that it can be cached and replayed."""

    def __init__(self) -> None:
        self.ops: list[list] = []

    def add_group(self, group: str) -> str:
        self.ops.append(["add_group", group])
        return group

    def add_host(self, host: str, group: str | None = None) -> str:
        self.ops.append(["add_host", host, group])
        return host

    def add_child(self, group: str, child: str) -> None:
        self.ops.append(["add_child", group, child])

    def set_variable(self, entity: str, name: str, value) -> None:
        self.ops.append(["set_variable", entity, name, value])


def _visible_files(root: Path, pattern: str = "*") -> list[Path]:
    """Files under `root` (recursively), without hidden entries and byte-code caches."""
    if not root.is_dir():
        return []
    return [
        p
        for p in root.rglob(pattern)
        if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)
    ]


def code_files() -> list[Path]:
    """The code the inventory is derived by: the basisit package (model, validation, policy,
    schemas) and this plugin."""
    return [Path(__file__), *_visible_files(Path(basisit.__file__).parent)]


def cache_scope(inv_dir: str, state: str) -> str:
    """The part of a cache key naming the inventory and state directory (older entries of the
    same scope are replaced)."""
    return hashlib.sha256(f"{inv_dir}\0{state}".encode()).hexdigest()[:16]


def cache_fingerprint(inv_dir: str, state: str, code: list[Path] | None = None) -> str:
    """A digest of everything the inventory is made from: each file of the inventory directory
    and each site-facts file (path and content), and the code (basisit's version, every file of
    the package and this plugin: a changed derivation is a miss even at the same version)."""
    h = hashlib.sha256()
    h.update(f"{inv_dir}\0{state}\0".encode())
    h.update(basisit.__version__.encode())
    files = _visible_files(Path(inv_dir)) + _visible_files(Path(state) / "facts", "*.json")
    files.append(upstream_record_file(state))  # the lab's package upstream (basisit_package_upstream)
    for f in [*(code_files() if code is None else code), *sorted(files)]:
        if f.is_file():
            h.update(f"\0{f}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _inventory_cli() -> bool:
    """Whether this process is `ansible-inventory` (which never templates a role's lookups)."""
    return os.path.basename(sys.argv[0]) == "ansible-inventory" or "graph" in (context.CLIARGS or {})


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "basisit"

    def verify_file(self, path: str) -> bool:
        """basisit.yml in the model's directory, or `<name>.basisit.yml` anywhere (an AWX source
        beside other sources) with inventory_dir pointing at the model; either plugin name."""
        name = os.path.basename(path)
        ours = name in ("basisit.yml", "basisit.yaml") or name.endswith((".basisit.yml", ".basisit.yaml"))
        return super().verify_file(path) and ours

    _source_dir = "."

    def set_options(self, task_keys=None, var_options=None, direct=None):
        """Ansible's, then the cache's directory: a relative cache_connection is relative to the
        source file, none at all means the state directory's cache/inventory (if it can be
        written; else no cache)."""
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        if not self._options.get("cache"):
            return
        conn = self._options.get("cache_connection")
        if conn:
            self._options["cache_connection"] = os.path.join(self._source_dir, os.path.expanduser(conn))
            return
        state = os.path.normpath(os.path.join(self._source_dir, self._options["state_dir"]))
        conn = os.path.join(state, "cache", "inventory")
        try:
            os.makedirs(conn, mode=0o700, exist_ok=True)
            writable = os.access(conn, os.W_OK | os.X_OK)
        except OSError:
            writable = False
        if writable:
            self._options["cache_connection"] = conn
        else:
            display.vvv(f"basisit inventory: {conn} cannot be written; loading without a cache")
            self._options["cache"] = False

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if _IMPORT_ERROR is not None:
            raise AnsibleParserError(
                f"basisit inventory plugin: cannot import the basisit package ({_IMPORT_ERROR}); "
                "run Ansible from the project's virtualenv (make setup; .venv/bin/ansible-...)"
            )
        # Both names select this plugin, however it was loaded (collection or inventory_plugins).
        self._redirected_names = [*(self._redirected_names or [self.NAME]), *PLUGIN_NAMES]
        base = os.path.dirname(os.path.abspath(path))
        self._source_dir = base
        self._read_config_data(path)
        inv_dir = os.path.normpath(os.path.join(base, self.get_option("inventory_dir")))
        state = os.path.normpath(os.path.join(base, self.get_option("state_dir")))
        ops = None
        use_cache = self.get_option("cache")
        if use_cache:
            # Keyed on the inputs' content: an edited Kommune file, new site facts or changed
            # code miss the cache.
            scope = f"basisit_{cache_scope(inv_dir, state)}_"
            key = scope + cache_fingerprint(inv_dir, state)
            if cache:
                with contextlib.suppress(KeyError):  # a miss: load and store below
                    ops = self._cache[key]
        if ops is None:
            ops = self._load(inv_dir, state)
            if use_cache:
                self._cache[key] = ops  # written by Ansible after parse (update_cache_if_changed)
                self._prune(scope, key)
        elif not _inventory_cli():
            # A playbook's roles ask lookup('basisit_model') in forked workers: they find the
            # estate in memory only if it is loaded here, before the fork.
            self._estate(inv_dir)
        for op, *args in ops:
            getattr(self.inventory, op)(*args)
        self._construct({op[1] for op in ops if op[0] == "add_host"})

    def _prune(self, scope: str, key: str) -> None:
        """Remove the entries of earlier contents of this inventory (same scope, other key)."""
        backing = getattr(self._cache, "_plugin", None)
        if backing is None:
            return
        with contextlib.suppress(Exception):  # pruning is housekeeping: never fail the run on it
            for old in backing.keys():  # noqa: SIM118 - a cache plugin, not a mapping
                if old.startswith(scope) and old != key:
                    backing.delete(old)

    @staticmethod
    def _estate(inv_dir: str):
        """The validated estate, kept for lookup('basisit_model') in this process and its forks."""
        from basisit import derived
        from basisit.validate import InventoryError

        try:
            estate = load_estate(inv_dir)
        except InventoryError as e:
            # Fails the run (ansible.cfg: any_unparsed_is_failed), never 0 hosts and a warning.
            raise AnsibleParserError(
                f"basisit inventory {inv_dir} is invalid; nothing was loaded. "
                f"Run `basisit inventory validate --inventory {inv_dir}` to list every error:\n{e.report()}"
            ) from None
        derived.remember(inv_dir, estate)
        return estate

    def _load(self, inv_dir: str, state: str) -> list[list]:
        estate = self._estate(inv_dir)
        recorder = _Recorder()
        self._populate(estate, inv_dir, state, recorder)
        return recorder.ops

    def _construct(self, hosts: set[str]) -> None:
        """compose, groups and keyed_groups over each host's group and host variables."""
        compose, groups, keyed = (self.get_option(o) for o in ("compose", "groups", "keyed_groups"))
        if not (compose or groups or keyed):
            return
        strict = self.get_option("strict")
        for name in sorted(hosts):
            host = self.inventory.get_host(name)
            variables = combine_vars(get_group_vars(host.get_groups()), host.get_vars())
            self._set_composite_vars(compose, variables, name, strict=strict)
            self._add_host_to_composed_groups(groups, variables, name, strict=strict)
            self._add_host_to_keyed_groups(keyed, variables, name, strict=strict)

    def _populate(self, estate, inv_dir: str, state: str, inv) -> None:
        from basisit import sitefacts

        inv.add_group("kommunen")
        inv.add_group("not_realised")
        _add_global_vars(inv, estate, inv_dir, state)
        for site in estate.sites:
            try:
                # Facts are input: checked against the model (addresses, ssh options) before any reach ssh.
                facts = sitefacts.read(Path(state), site.slug, estate)
            except sitefacts.FactsError as e:
                raise AnsibleParserError(str(e)) from None
            groups = _add_site(inv, site, estate.standard.version)
            for host in site.hosts:
                _add_host(inv, host, groups)
                _add_host_model_vars(inv, estate, host, state, facts)
                _add_host_connection_vars(inv, host, facts)


def _add_global_vars(inv, estate, inv_dir: str, state: str) -> None:
    """The variables of group all: zentral's services, the standard, where model and state live."""
    from basisit import model

    # The zentral offerings every site uses, by role: {role: [{name, address}]}.
    inv.set_variable(
        "all",
        "basisit_zentral_services",
        {
            role: [
                {
                    "name": h.name,
                    "address": str(h.address),
                    "addresses": {z: str(a) for z, a in h.addresses.items()},
                }
                for h in estate.zentral.hosts_with_role(role)
            ]
            for role in sorted({r for h in estate.zentral.hosts for r in h.roles})
        },
    )
    # Of the standard, what roles read (admins and service settings); the allow matrix, the
    # addressing plan and the host kinds are the model's input, already resolved above.
    inv.set_variable("all", "basisit_standard", standard_vars(estate.standard))
    # The account Ansible connects as (base keeps it, its sudo rule and its sshd group).
    inv.set_variable("all", "basisit_automation_user", model.AUTOMATION_USER)
    # Where the model lives: lookup('basisit_model', ...) reads the same estate.
    inv.set_variable("all", "basisit_inventory_dir", inv_dir)
    # Where lab secrets (mode 0600) and other runtime state live on the control host.
    inv.set_variable("all", "basisit_state_dir", state)


def _add_site(inv, site, standard_version: int) -> list[str]:
    """The site's group (the slug, or zentral) with its variables, and a Kommune's district, wave
    and size groups: [site group, *the others]."""
    if site.is_zentral:
        site_group = inv.add_group("zentral")
        groups = [site_group]
    else:
        # The Kommune group is the slug itself so that `-l bexbach` and `-l st-wendel` work.
        site_group = inv.add_group(site.slug)
        inv.add_child("kommunen", site_group)
        k = site.kommune
        groups = [
            site_group,
            inv.add_group(group_name("district", k.district)),
            inv.add_group(group_name("wave", k.wave)),
            inv.add_group(group_name("size", site.size)),
        ]
    site_vars = site.to_dict()
    site_vars.pop("hosts")
    site_vars["reverse_zones"] = reverse_zones(site)
    inv.set_variable(site_group, "basisit_site", site_vars)
    inv.set_variable(site_group, "basisit_standard_version", standard_version)
    return groups


def _add_host(inv, host, groups: list[str]) -> None:
    """The host in its site's groups and in one group per role."""
    inv.add_host(host.name, group=groups[0])
    for g in groups[1:]:
        inv.add_host(host.name, group=g)
    for role in host.roles:
        inv.add_host(host.name, group=inv.add_group(role))


def _add_host_model_vars(inv, estate, host, state: str, facts: dict | None) -> None:
    """What the model says of the host: basisit_host (with its DHCP client id), its roles, backend,
    the control sources its firewall admits, the package upstream, its outbound rule names."""
    from basisit import policy
    from basisit.lab import plan as lab_plan

    hv = host.to_dict()
    if "asset" in hv:
        # DHCP client identifier (type 0 + asset tag): the gateway's reservation key.
        tag = hv["asset"]["asset_tag"].encode()
        hv["asset"]["dhcp_client_id"] = ":".join(f"{b:02x}" for b in b"\0" + tag)
    inv.set_variable(host.name, "basisit_host", hv)
    inv.set_variable(host.name, "basisit_roles", hv["roles"])
    inv.set_variable(host.name, "basisit_backend", facts["backend"] if facts else "planned")
    # The lab's control host is not zentral's mgmt host: firewalls must also admit its SSH.
    control = [str(lab_plan.control_address(estate).ip) + "/32"] if facts and facts["backend"] == "lab" else []
    inv.set_variable(host.name, "basisit_control_sources", control)
    if policy.PACKAGE_PROXY_ROLE in host.roles:
        # The package proxy's upstream: direct in the cloud; in the lab the forwarder
        # `basisit lab up` runs on the control host (and the mirrors it forwards to).
        inv.set_variable(host.name, "basisit_package_upstream", package_upstream(state, facts))
    # Of the allow matrix only the names of the rules the host may open connections
    # under (base forwards logs where a log rule admits it); the rule sets (input,
    # forward) and the hub's peers come from lookup('basisit_model', ...) where a role
    # needs them, computed by basisit.policy on the control host.
    inv.set_variable(host.name, "basisit_firewall_outbound_rules", policy.outbound_rule_names(estate, host))


def _add_host_connection_vars(inv, host, facts: dict | None) -> None:
    """How Ansible reaches the host: the facts' address, port, user, become, key and SSH options;
    a host the site's facts do not list goes to not_realised (at its planned address)."""
    realised = (facts or {}).get("hosts", {})
    ssh = (facts or {}).get("ssh", {})
    real = realised.get(host.name)
    if facts and real is None:
        inv.add_host(host.name, group="not_realised")
        inv.set_variable(host.name, "ansible_host", str(host.address))
        return
    inv.set_variable(host.name, "ansible_host", real["ansible_host"] if real else str(host.address))
    if real and "ansible_port" in real:
        inv.set_variable(host.name, "ansible_port", real["ansible_port"])
    if ssh.get("user"):
        inv.set_variable(host.name, "ansible_user", ssh["user"])
    # A login account the facts name other than root (the automation account): every
    # play runs with sudo (tasks delegated to the control host take its vars there).
    inv.set_variable(host.name, "ansible_become", bool(ssh.get("user")) and ssh["user"] != "root")
    if ssh.get("private_key_file"):
        inv.set_variable(host.name, "ansible_ssh_private_key_file", ssh["private_key_file"])
    args = ssh.get("common_args", "")
    if ssh.get("known_hosts_file"):
        args = f"{args} -o UserKnownHostsFile={ssh['known_hosts_file']}".strip()
    if args:
        inv.set_variable(host.name, "ansible_ssh_common_args", args)


STANDARD_VARS = ("version", "admins", "access", "services")


def upstream_record_file(state: str) -> Path:
    """basisit.lab.plan.upstream_record_path, without importing the model (a cache input)."""
    return Path(state) / "lab" / "aptproxy.json"


def package_upstream(state: str, facts: dict | None) -> dict:
    """{proxy, mirror, security_mirror} of the lab's package forwarder (backend lab), else {} (direct)."""
    from basisit.lab import plan as lab_plan

    if not facts or facts.get("backend") != "lab":
        return {}
    rec = lab_plan.upstream_record(Path(state))
    if not rec:
        path = lab_plan.upstream_record_path(Path(state))
        return {"missing": f"the lab's package upstream is not running (no {path}); run `basisit lab up`"}
    return {"proxy": rec["url"], "mirror": rec["mirror"], "security_mirror": rec["security_mirror"]}


def standard_vars(std) -> dict:
    """The parts of the standard roles read (basisit_standard.admins, .access, .services.*)."""
    return {k: v for k, v in std.model_dump(mode="json", by_alias=True).items() if k in STANDARD_VARS}


def reverse_zones(site) -> list[str]:
    """The site's /24 reverse zones (in-addr.arpa names), one per /24 its networks touch."""
    nets = [site.block] if site.block is not None else [z.network for z in site.zones.values()]
    zones = set()
    for net in nets:
        for sub in net.subnets(new_prefix=24) if net.prefixlen < 24 else [net.supernet(new_prefix=24)]:
            zones.add(".".join(reversed(str(sub.network_address).split(".")[:3])) + ".in-addr.arpa")
    return sorted(zones)
