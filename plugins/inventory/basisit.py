"""Ansible inventory plugin: the basisit model (plus site facts) as Ansible inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
name: basisit
short_description: Kommunen, zentral and their hosts from the basisit model
description:
  - Loads and validates the basisit inventory (standard.yaml, zentral.yaml, kommunen/*.yaml) with
    the same Python model every other part of basisit uses, and adds every host with its model
    as hostvars.
  - Groups per Kommune (the slug), per district, per wave, per size class and per role, plus
    C(kommunen) and C(zentral).
  - C(ansible_host) and the SSH settings come from the site facts written by C(basisit lab up) or
    C(basisit facts import) when they exist; otherwise the planned address is used. Hosts that a
    site's facts do not list (e.g. endpoints beyond the lab's cap) go to group C(not_realised).
options:
  plugin:
    description: Marks this file as a basisit inventory source.
    required: true
    choices: [basisit]
  inventory_dir:
    description: The basisit inventory directory; relative paths are relative to this file.
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
# inventory/basisit.yml
plugin: basisit
"""

import os
import re
from pathlib import Path

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

try:
    from basisit import sitefacts
    from basisit.validate import InventoryError, load_estate
except ImportError as e:  # pragma: no cover - reported to the user by Ansible
    _IMPORT_ERROR: Exception | None = e
else:
    _IMPORT_ERROR = None


def group_name(*parts: object) -> str:
    """A valid Ansible group name: lower case, [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", "_".join(str(p) for p in parts).lower()).strip("_")


class InventoryModule(BaseInventoryPlugin):
    NAME = "basisit"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and os.path.basename(path) in ("basisit.yml", "basisit.yaml")

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if _IMPORT_ERROR is not None:
            raise AnsibleParserError(
                f"basisit inventory plugin: cannot import the basisit package ({_IMPORT_ERROR}); "
                "run Ansible from the project's virtualenv (make setup; .venv/bin/ansible-...)"
            )
        self._read_config_data(path)
        base = os.path.dirname(os.path.abspath(path))
        inv_dir = os.path.normpath(os.path.join(base, self.get_option("inventory_dir")))
        state = os.path.normpath(os.path.join(base, self.get_option("state_dir")))
        try:
            estate = load_estate(inv_dir)
        except InventoryError as e:
            raise AnsibleParserError(e.report()) from None
        self._populate(estate, state)

    def _populate(self, estate, state: str) -> None:
        inv = self.inventory
        std = estate.standard
        inv.add_group("kommunen")
        inv.add_group("not_realised")
        inv.set_variable("all", "basisit_standard", std.model_dump(mode="json", by_alias=True))
        # Where lab secrets (mode 0600) and other runtime state live on the control host.
        inv.set_variable("all", "basisit_state_dir", state)
        for site in estate.sites:
            try:
                facts = sitefacts.read(Path(state), site.slug)
            except sitefacts.FactsError as e:
                raise AnsibleParserError(str(e)) from None
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
            inv.set_variable(site_group, "basisit_site", site_vars)
            inv.set_variable(site_group, "basisit_standard_version", std.version)
            realised = (facts or {}).get("hosts", {})
            ssh = (facts or {}).get("ssh", {})
            for host in site.hosts:
                inv.add_host(host.name, group=site_group)
                for g in groups[1:]:
                    inv.add_host(host.name, group=g)
                for role in host.roles:
                    inv.add_host(host.name, group=inv.add_group(role))
                hv = host.to_dict()
                inv.set_variable(host.name, "basisit_host", hv)
                inv.set_variable(host.name, "basisit_roles", hv["roles"])
                inv.set_variable(host.name, "basisit_backend", facts["backend"] if facts else "planned")
                real = realised.get(host.name)
                if facts and real is None:
                    inv.add_host(host.name, group="not_realised")
                    inv.set_variable(host.name, "ansible_host", str(host.address))
                    continue
                inv.set_variable(host.name, "ansible_host", real["ansible_host"] if real else str(host.address))
                if real and "ansible_port" in real:
                    inv.set_variable(host.name, "ansible_port", real["ansible_port"])
                if ssh.get("user"):
                    inv.set_variable(host.name, "ansible_user", ssh["user"])
                if ssh.get("private_key_file"):
                    inv.set_variable(host.name, "ansible_ssh_private_key_file", ssh["private_key_file"])
                args = ssh.get("common_args", "")
                if ssh.get("known_hosts_file"):
                    args = f"{args} -o UserKnownHostsFile={ssh['known_hosts_file']}".strip()
                if args:
                    inv.set_variable(host.name, "ansible_ssh_common_args", args)
