"""Static contract of the roles: specs, defaults, variable names, generated docs.

- every role has meta/argument_specs.yml whose options are exactly defaults/main.yml's names,
  with the same defaults (Ansible never applies a spec default, so they must not drift);
- every variable is prefixed with its role's name;
- every role variable set in inventory/group_vars or playbooks is declared in some role's spec
  (a typo such as `nginx_use_ppa` for `nginx_ppa_use` fails here);
- docs/roles.md is what roles/gendocs.py renders.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent for p in (ROOT / "roles").glob("*/tasks"))
ROLE_NAMES = {r.name for r in ROLES}
# Variables owned by the inventory plugin and the lab image, not by a role.
GLOBAL_PREFIXES = ("basisit_", "ansible_")


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _spec(role: Path) -> dict:
    return _yaml(role / "meta" / "argument_specs.yml")["argument_specs"]["main"].get("options", {})


def _defaults(role: Path) -> dict:
    path = role / "defaults" / "main.yml"
    return (_yaml(path) or {}) if path.exists() else {}


def _all_spec_names() -> set[str]:
    return {name for role in ROLES for name in _spec(role)}


def test_roles_exist():
    assert {"base", "gateway"} <= ROLE_NAMES


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_spec_and_defaults_agree(role: Path):
    spec, defaults = _spec(role), _defaults(role)
    assert set(spec) == set(defaults), (
        f"{role.name}: only in argument_specs: {sorted(set(spec) - set(defaults))}; "
        f"only in defaults/main.yml: {sorted(set(defaults) - set(spec))}"
    )
    for name, opt in spec.items():
        assert "default" in opt, f"{role.name}: {name} has a default in defaults/main.yml but none in the spec"
        assert opt["default"] == defaults[name], (
            f"{role.name}: {name}: spec default {opt['default']!r} != {defaults[name]!r}"
        )
        assert opt.get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_variables_are_role_prefixed(role: Path):
    names = set(_spec(role)) | set(_defaults(role))
    bad = sorted(n for n in names if not n.startswith(f"{role.name}_"))
    assert not bad, f"{role.name}: variables without the prefix {role.name}_: {bad}"
    vars_file = role / "vars" / "main.yml"
    internal = set(_yaml(vars_file) or {}) if vars_file.exists() else set()
    bad = sorted(n for n in internal if not n.startswith(f"__{role.name}_"))
    assert not bad, f"{role.name}: internal vars (vars/main.yml) must start with __{role.name}_: {bad}"


def _set_vars() -> list[tuple[str, str]]:
    """(file, variable) for every variable set in inventory/group_vars, host_vars and playbooks."""
    found = []
    for path in sorted((ROOT / "inventory").glob("*_vars/**/*.yml")):
        for name in _yaml(path) or {}:
            found.append((str(path.relative_to(ROOT)), name))
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in _yaml(path) or []:
            for name in play.get("vars") or {}:
                found.append((str(path.relative_to(ROOT)), name))
            for role in play.get("roles") or []:
                if isinstance(role, dict):
                    for name in role.get("vars") or {}:
                        found.append((str(path.relative_to(ROOT)), name))
    return found


def test_every_set_role_variable_is_declared():
    declared = _all_spec_names()
    prefixes = tuple(f"{r}_" for r in ROLE_NAMES)
    unknown = [
        (f, n)
        for f, n in _set_vars()
        if not n.startswith(GLOBAL_PREFIXES) and (n.startswith(prefixes) or n not in declared) and n not in declared
    ]
    assert not unknown, f"variables set but declared in no role's argument_specs: {unknown}"


def test_role_templates_use_only_declared_or_internal_names():
    """A task or template that reads `<role>_something` must read a declared variable."""
    declared = _all_spec_names()
    pattern = re.compile(r"\b(" + "|".join(sorted(ROLE_NAMES)) + r")_[a-z0-9_]+\b")
    unknown = set()
    for role in ROLES:
        for path in [*role.glob("tasks/*.yml"), *role.glob("templates/*"), *role.glob("handlers/*.yml")]:
            for m in pattern.finditer(path.read_text(encoding="utf-8")):
                name = m.group(0)
                if name not in declared and not name.endswith((".yml", ".j2")):
                    unknown.add((str(path.relative_to(ROOT)), name))
    # file names such as 52basisit-... or service names are not variables
    unknown = {(f, n) for f, n in unknown if not re.search(r"(\.nft|\.conf)$", n)}
    assert not unknown, f"undeclared role variables referenced: {sorted(unknown)}"


def test_docs_in_sync():
    spec = importlib.util.spec_from_file_location("gendocs", ROOT / "roles" / "gendocs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "roles.md").read_text(encoding="utf-8") == mod.render(), (
        "docs/roles.md is stale: run .venv/bin/python roles/gendocs.py > docs/roles.md"
    )


# Secrets never in argv (visible in `ps` on the host, and in the ssh command on the control host
# while a task runs): not in a command's argv/cmd/free-form string, not in `environment:` (Ansible
# prefixes it to the remote `sh -c` command line). They travel by stdin, a 0600 file or a wrapper
# that reads stdin (basisit-samba-tool's @SECRET@).
COMMAND_MODULES = {f"{ns}{m}" for ns in ("", "ansible.builtin.") for m in ("command", "shell", "raw", "script")}
SECRET_EXPR = re.compile(
    r"\{\{[^}]*(password(?!_policy)|passw(?!ord_policy)|secret|__backup_\w+_(rest|repo)\b)[^}]*\}\}"
)


def _tasks(node):
    """Every task of a task list, blocks included."""
    for task in node or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _argv_texts(task: dict) -> list[str]:
    texts = []
    for module in COMMAND_MODULES & task.keys():
        args = task[module]
        if isinstance(args, str):
            texts.append(args)
        elif isinstance(args, dict):
            texts += [str(a) for a in args.get("argv") or []]
            texts += [str(args[k]) for k in ("cmd", "_raw_params") if k in args]
    texts += (
        [str(v) for v in (task.get("environment") or {}).values()] if isinstance(task.get("environment"), dict) else []
    )
    texts += [str(v) for v in (task.get("args") or {}).values()] if isinstance(task.get("args"), dict) else []
    return texts


TASK_FILES = sorted((ROOT / "roles").glob("*/tasks/*.yml")) + sorted((ROOT / "roles").glob("*/handlers/*.yml"))


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: str(p.relative_to(ROOT / "roles")))
def test_no_secret_in_argv_or_environment(path: Path):
    leaks = [
        f"{task.get('name', '?')}: {text.strip()[:80]}"
        for task in _tasks(_yaml(path))
        for text in _argv_texts(task)
        if SECRET_EXPR.search(text)
    ]
    assert leaks == [], f"{path.relative_to(ROOT)}: a secret on a command line or in `environment:`"


def test_secret_detector_sees_the_old_forms():
    provision = {"ansible.builtin.command": {"argv": ["samba-tool", "--adminpass={{ __ad_dc_admin_password }}"]}}
    joined = {"ansible.builtin.command": "samba-tool join", "environment": {"PASSWD": "{{ __ad_dc_admin_password }}"}}
    probe = {"ansible.builtin.command": {"argv": ["samba-tool", "user", "create", "x", "{{ __ad_dc_probe_password }}"]}}
    policy = {"ansible.builtin.command": {"argv": ["--min-pwd-length={{ ad_dc_password_policy.min_length }}"]}}
    stdin = {
        "ansible.builtin.command": {"argv": ["basisit-samba-tool", "--adminpass=@SECRET@"], "stdin": "{{ x_password }}"}
    }
    assert all(any(SECRET_EXPR.search(t) for t in _argv_texts(task)) for task in (provision, joined, probe))
    assert not any(SECRET_EXPR.search(t) for task in (policy, stdin) for t in _argv_texts(task))


def test_no_password_lookup_outside_basisit_secret():
    """Generated secrets come from basisit_secret only (policy by construction, see test_secret_lookup)."""
    users = [p for p in sorted((ROOT / "roles").rglob("*.yml")) if "ansible.builtin.password" in p.read_text()]
    assert users == []


def test_state_secrets_read_through_basisit_lookups_only():
    """The state's secrets are vault-encrypted: a plain file lookup or slurp would hand over ciphertext."""
    readers = [
        p.relative_to(ROOT)
        for p in sorted((ROOT / "roles").rglob("*.yml")) + sorted((ROOT / "roles").rglob("*.j2"))
        if re.search(r"lookup\(\s*'(?:ansible\.builtin\.)?file'", p.read_text(encoding="utf-8"))
    ]
    assert readers == []


def test_base_firewall_before_forwarding():
    """Base installs and loads its ruleset (forward chain, policy drop) before sysctl enables forwarding."""
    order = [
        t["ansible.builtin.import_tasks"]
        for t in _yaml(ROOT / "roles/base/tasks/main.yml")
        if "ansible.builtin.import_tasks" in t
    ]
    assert order.index("firewall.yml") < order.index("sysctl.yml"), order
    firewall = list(_tasks(_yaml(ROOT / "roles/base/tasks/firewall.yml")))
    loads = [t for t in firewall if "/usr/sbin/nft -f /etc/nftables.conf" in str(t.get("ansible.builtin.command"))]
    assert loads, "base loads its ruleset only in a handler (at the end of the play, after sysctl)"
    import jinja2

    env = jinja2.Environment()
    env.filters["bool"] = bool
    template = env.from_string((ROOT / "roles/base/templates/nftables.conf.j2").read_text(encoding="utf-8"))
    for router in (False, True):
        text = template.render(
            ansible_managed="",
            base_firewall_inbound=[],
            base_firewall_ssh_extra_sources=["192.0.2.1/32"],
            base_sysctl_ip_forward=router,
            base_firewall_dropin_dir="/etc/nftables.d",
        )
        assert re.search(r"chain forward \{\s*type filter hook forward priority filter; policy drop;", text), router
