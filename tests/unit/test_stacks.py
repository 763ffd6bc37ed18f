"""The Pulumi programs under mocks: all 52 Kommune stacks and zentral in one process, policy-checked.

No engine, no provider plugin: basisit.cloud.mockrun runs each stack under
`pulumi.runtime.set_mocks` (fresh settings and config per stack, preview=False) and records every
resource registration. The checks in stackchecks.py assert policy on the recorded inputs; the
broken fixtures at the end prove the same checks fail when a rule or an address is wrong.
"""

from __future__ import annotations

import ipaddress
import json
import runpy
from dataclasses import replace
from functools import cache
from pathlib import Path

import pulumi
import pytest
import stackchecks as sc
import yaml

from basisit.cloud import cli as stacks_cli
from basisit.cloud import config as cloud_config
from basisit.cloud import mockrun
from basisit.cloud import plan as cloud_plan
from basisit.cloud.components import openstack
from basisit.model import AUTOMATION_USER, Estate
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
ESTATE: Estate = load_estate(ROOT / "inventory")
SLUGS = ["zentral", *ESTATE.kommunen]

# Resources per stack by size class (components and providers included). A change in the model,
# the standard or the programs that moves these numbers must be deliberate: update them here.
EXPECTED_COUNTS = {
    "S": 88,
    "M": 96,
    "L": 131,
    "zentral": 782,
}  # zentral +4: the zentral log rules (gateway, management host, backup server -> log host); +2: backup-maintenance (mgmt egress, backup ingress); the *-packages rules to the package
# proxy: +3 security-group rules per Kommune, zentral +316 (the management host admits every
# Kommune's client and server networks and its gateway, and zentral's own); Kommunen +3: the
# gateway's transfer group (tunnel-repair-ssh ingress, site-vpn egress)
EXPECTED_SERVERS = {"S": 2, "M": 3, "L": 4, "zentral": 4}
# One stack per size class and zentral, checked one check per test for readable failures.
SAMPLES = ["nalbach", "bexbach", "homburg", "zentral"]
CHECKS = {
    "ran": lambda site, run, cfg: sc.check_ran(run),
    "subnets": lambda site, run, cfg: sc.check_subnets(site, run),
    "fixed_ips": lambda site, run, cfg: sc.check_fixed_ips(site, run),
    "rules": lambda site, run, cfg: sc.check_rules(ESTATE, site, run),
    "security_groups": lambda site, run, cfg: sc.check_security_groups(ESTATE, site, run),
    "volumes": lambda site, run, cfg: sc.check_volumes(site, run, cfg),
    "instances": lambda site, run, cfg: sc.check_instances(site, run, cfg),
    "names": lambda site, run, cfg: sc.check_names(site, run),
    "providers_and_parents": lambda site, run, cfg: sc.check_providers_and_parents(site, run),
    "user_data": lambda site, run, cfg: sc.check_user_data(ESTATE, run),
    "facts": lambda site, run, cfg: sc.check_facts(site, run),
}


@cache
def all_runs() -> dict[str, mockrun.StackRun]:
    """All 53 stacks, one after the other in this process (once per test process)."""
    return mockrun.run_all(ESTATE)


@cache
def run_of(slug: str) -> mockrun.StackRun:
    if all_runs.cache_info().currsize:
        return all_runs()[slug]
    return mockrun.run_site(ESTATE, ESTATE.site(slug))


def committed_config(slug: str) -> dict:
    site = ESTATE.site(slug)
    doc = yaml.safe_load(cloud_config.stack_file(site).read_text(encoding="utf-8"))
    project = cloud_config.project_of(site)
    return {k.removeprefix(f"{project}:"): v for k, v in doc["config"].items()}


def size_key(slug: str) -> str:
    site = ESTATE.site(slug)
    return "zentral" if site.is_zentral else str(site.size)


# --- every stack --------------------------------------------------------------------------


def test_every_kommune_has_a_stack():
    assert len(ESTATE.kommunen) == 52
    assert len(SLUGS) == 53
    assert {size_key(s) for s in SAMPLES} == set(EXPECTED_COUNTS)


def test_stack_config_files_in_sync():
    stale, extra = stacks_cli.sync(ESTATE, cloud_config.STACKS_DIR, check=True)
    assert not stale, f"run `basisit stacks config`: {stale}"
    assert not extra


@pytest.mark.parametrize("project", ["kommune", "zentral"])
def test_pulumi_yaml_documents_every_config_key(project):
    doc = yaml.safe_load((cloud_config.STACKS_DIR / project / "Pulumi.yaml").read_text(encoding="utf-8"))
    assert doc["name"] == f"basisit-{project}"
    assert doc["runtime"]["options"]["virtualenv"] == "../../.venv"
    declared = doc["config"]
    assert all(v.get("description") for v in declared.values())
    used = set(committed_config("zentral" if project == "zentral" else "bexbach"))
    assert used <= set(declared), used - set(declared)
    # keys without a stack value need a default, or `pulumi up` stops (intended for the operator's own)
    assert all("default" in v for k, v in declared.items() if k not in used and k not in cloud_config.OPERATOR_KEYS)


def test_stacks_config_check_flags_a_stale_file(tmp_path):
    stale, _ = stacks_cli.sync(ESTATE, tmp_path, check=False)
    assert len(stale) == 53
    target = tmp_path / "kommune" / "Pulumi.bexbach.yaml"
    target.write_text(target.read_text(encoding="utf-8").replace("b1.medium", "b1.huge"), encoding="utf-8")
    stale, _ = stacks_cli.sync(ESTATE, tmp_path, check=True)
    assert stale == [target]


def test_stacks_config_keeps_what_stack_init_wrote(tmp_path):
    """`pulumi stack init` adds the secrets provider's keys to the stack file; regenerating keeps them."""
    stacks_cli.sync(ESTATE, tmp_path, check=False)
    target = tmp_path / "kommune" / "Pulumi.tholey.yaml"
    text = target.read_text(encoding="utf-8").replace("config:\n", "encryptionsalt: v1:abc:def\nconfig:\n", 1)
    target.write_text(text, encoding="utf-8")
    assert stacks_cli.sync(ESTATE, tmp_path, check=True) == ([], [])
    (tmp_path / "kommune" / "Pulumi.atlantis.yaml").write_text("config: {}\n", encoding="utf-8")
    assert stacks_cli.sync(ESTATE, tmp_path, check=True)[1] == [tmp_path / "kommune" / "Pulumi.atlantis.yaml"]


def test_all_stacks_in_one_process():
    """All 52 Kommune stacks and zentral, run one after the other here, pass every check."""
    runs = all_runs()
    assert list(runs) == SLUGS
    problems: list[str] = []
    checked = facts = 0
    owner: dict[str, str] = {}
    for slug, run in runs.items():
        site = ESTATE.site(slug)
        assert run.stack == slug and run.resources, slug  # registered something, as this stack
        problems += [f"{slug}: {p}" for p in sc.check_all(ESTATE, site, run, committed_config(slug))]
        key = size_key(slug)
        if len(run.resources) != EXPECTED_COUNTS[key]:
            problems.append(f"{slug}: {len(run.resources)} resources, expected {EXPECTED_COUNTS[key]} for {key}")
        if len(run.of_type(sc.T_INSTANCE)) != EXPECTED_SERVERS[key]:
            problems.append(f"{slug}: {len(run.of_type(sc.T_INSTANCE))} servers, expected {EXPECTED_SERVERS[key]}")
        for r in run.resources:  # two stacks never share a resource name
            if owner.setdefault(r.name, slug) != slug:
                problems.append(f"{r.name}: used by {owner[r.name]} and {slug}")
        facts += isinstance(run.outputs.get("site_facts"), dict)
        checked += 1
    assert problems == [], "\n".join(problems)
    assert checked == facts == 53  # every output assertion really ran (no unknowns skipped)


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("slug", SAMPLES)
def test_sample_stack(slug, check):
    site = ESTATE.site(slug)
    problems = CHECKS[check](site, run_of(slug), committed_config(slug))
    assert problems == [], "\n".join(problems)


def test_config_does_not_leak_between_stacks():
    """A stack run right after another sees only its own config."""
    s, m = ESTATE.site("nalbach"), ESTATE.site("homburg")  # sizes S and L
    a = mockrun.run_site(ESTATE, m)
    b = mockrun.run_site(ESTATE, s)
    assert {r.name.rsplit("-", 1)[0] for r in b.of_type(sc.T_INSTANCE)} == {"nalbach"}
    flavors_b = {r.inputs["flavorName"] for r in b.of_type(sc.T_INSTANCE)}
    assert flavors_b == set(committed_config("nalbach")["flavors"].values())
    assert "b1.xlarge" in {r.inputs["flavorName"] for r in a.of_type(sc.T_INSTANCE)}
    assert not any(r.name.startswith("homburg") for r in b.resources)


# --- the traps, and broken fixtures caught by the same checks ----------------------------


def test_refuses_pulumi_config_in_environment(monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", '{"basisit-kommune:image": "evil"}')
    with pytest.raises(RuntimeError, match="PULUMI_CONFIG"):
        mockrun.run_site(ESTATE, ESTATE.site("bexbach"))


def test_a_program_that_registers_nothing_is_an_error():
    """What a program imported before set_mocks looks like: it runs, and registers nothing."""
    with pytest.raises(mockrun.EmptyRun):
        mockrun.run_program(lambda: {"x": 1}, "basisit-kommune", "bexbach", {})


def test_duplicate_resource_name_raises():
    def program():
        openstack.networking.Network("bexbach-dup", name="a")
        openstack.networking.Network("bexbach-dup", name="b")
        return {}

    with pytest.raises(mockrun.DuplicateResourceName):
        mockrun.run_program(program, "basisit-kommune", "bexbach", {})


def test_preview_leaves_outputs_unknown_and_the_runner_says_so():
    """In preview, ids are unknown and apply callbacks never run: the facts would silently be missing."""

    def program():
        net = openstack.networking.Network("bexbach-net", name="bexbach-x")
        return {"facts": net.id.apply(lambda i: {"id": i})}

    with pytest.raises(mockrun.EmptyRun, match="did not resolve"):
        mockrun.run_program(program, "basisit-kommune", "bexbach", {}, preview=True)
    assert mockrun.run_program(program, "basisit-kommune", "bexbach", {}).outputs["facts"] == {"id": "bexbach-net-id"}


def test_wrong_stack_name_is_refused():
    with pytest.raises(cloud_config.ConfigError, match="not a Kommune"):
        mockrun.run_program(lambda: __import__("basisit.cloud.program").cloud.program.run(ESTATE), "p", "atlantis", {})


def _broken_run(monkeypatch, slug: str, change) -> mockrun.StackRun:
    real = cloud_plan.build

    def build(estate, site):
        return change(real(estate, site))

    monkeypatch.setattr(cloud_plan, "build", build)
    return mockrun.run_site(ESTATE, ESTATE.site(slug))


def _add_rule(p: cloud_plan.SitePlan, group: str, rule: cloud_plan.SgRule) -> cloud_plan.SitePlan:
    groups = tuple(replace(g, rules=(*g.rules, rule)) if g.name == group else g for g in p.security_groups)
    return replace(p, security_groups=groups)


def test_broken_fixture_ssh_from_the_world_is_caught(monkeypatch):
    bad = cloud_plan.SgRule("tcp", 22, ipaddress.IPv4Network("0.0.0.0/0"), ("broken",))
    run = _broken_run(monkeypatch, "bexbach", lambda p: _add_rule(p, "bexbach-sg-site", bad))
    problems = sc.check_rules(ESTATE, ESTATE.site("bexbach"), run)
    assert any("0.0.0.0/0" in x for x in problems), problems
    assert sc.check_security_groups(ESTATE, ESTATE.site("bexbach"), run)


def test_broken_fixture_ldap_from_another_kommune_is_caught(monkeypatch):
    other = ESTATE.site("mettlach").zones["client"].network
    bad = cloud_plan.SgRule("tcp", 389, other, ("broken",))
    run = _broken_run(monkeypatch, "bexbach", lambda p: _add_rule(p, "bexbach-sg-ad_dc", bad))
    problems = sc.check_rules(ESTATE, ESTATE.site("bexbach"), run)
    assert any("mettlach" in x for x in problems), problems


def test_broken_fixture_wrong_address_is_caught(monkeypatch):
    def shift(p: cloud_plan.SitePlan) -> cloud_plan.SitePlan:
        ports = tuple(replace(x, address=x.address + 1) if x.name == "bexbach-dc1-server" else x for x in p.ports)
        return replace(p, ports=ports)

    run = _broken_run(monkeypatch, "bexbach", shift)
    site = ESTATE.site("bexbach")
    assert any("bexbach-dc1-server" in x for x in sc.check_fixed_ips(site, run))
    assert any("differs from the model" in x for x in sc.check_facts(site, run))


def test_broken_fixture_missing_role_group_is_caught(monkeypatch):
    def drop(p: cloud_plan.SitePlan) -> cloud_plan.SitePlan:
        ports = tuple(
            replace(x, security_groups=tuple(g for g in x.security_groups if g != "bexbach-sg-ad_dc")) for x in p.ports
        )
        return replace(p, ports=ports)

    run = _broken_run(monkeypatch, "bexbach", drop)
    problems = sc.check_security_groups(ESTATE, ESTATE.site("bexbach"), run)
    assert any("lacks the security group of role ad_dc" in x for x in problems)
    assert any("not admitted" in x for x in problems)


def test_broken_fixture_wrong_subnet_and_missing_volume_are_caught(monkeypatch):
    site = ESTATE.site("bexbach")

    def move(p: cloud_plan.SitePlan) -> cloud_plan.SitePlan:
        zones = tuple(
            replace(z, network=ipaddress.IPv4Network("10.160.216.64/26")) if z.name == "server" else z for z in p.zones
        )
        return replace(p, zones=zones)

    run = _broken_run(monkeypatch, "bexbach", move)
    assert any("cidr" in x for x in sc.check_subnets(site, run))
    cfg = committed_config("bexbach")
    cfg["volumes"] = {**cfg["volumes"], "gateway": 10}
    assert any("bexbach-gw" in x for x in sc.check_volumes(site, run_of("bexbach"), cfg))


def test_secret_in_user_data_is_caught():
    run = run_of("nalbach")
    inst = run.of_type(sc.T_INSTANCE)[0]
    bad = replace(inst, inputs={**inst.inputs, "userData": inst.inputs["userData"] + "chpasswd: {list: x}\n"})
    broken = replace(run, mocks=mockrun.RecordingMocks(resources=[bad]))
    assert any("chpasswd" in x for x in sc.check_user_data(ESTATE, broken))


def test_mocks_are_set_per_run():
    """set_mocks left the last stack's settings in place; a new run replaces them."""
    mockrun.run_site(ESTATE, ESTATE.site("tholey"))
    assert pulumi.get_stack() == "tholey"
    mockrun.run_site(ESTATE, ESTATE.zentral)
    assert pulumi.get_stack() == "zentral" and pulumi.get_project() == "basisit-zentral"


def test_stack_output_imports_as_site_facts(tmp_path, run):
    """`pulumi stack output --json | basisit facts import --kommune SLUG -` with the mock outputs."""
    out = tmp_path / "bexbach.json"
    out.write_text(json.dumps(run_of("bexbach").outputs), encoding="utf-8")
    rc, _, stderr = run("--state", tmp_path / "state", "facts", "import", "--kommune", "bexbach", out)
    assert rc == 0, stderr
    stored = json.loads((tmp_path / "state" / "facts" / "bexbach.json").read_text(encoding="utf-8"))
    assert stored["backend"] == "cloud" and set(stored["hosts"]) == {"bexbach-gw", "bexbach-dc1", "bexbach-fs1"}


@pytest.mark.parametrize(("project", "slug"), [("kommune", "tholey"), ("zentral", "zentral")])
def test_entry_point_exports_the_outputs(project, slug):
    """stacks/<project>/__main__.py, run as the engine would, exports the site facts."""
    site = ESTATE.site(slug)

    def program():
        runpy.run_path(str(cloud_config.STACKS_DIR / project / "__main__.py"), run_name="__main__")
        return dict(pulumi.runtime.get_root_resource().outputs)

    cfg = mockrun.with_automation_key(site, mockrun.stack_config_from_file(site))
    run = mockrun.run_program(program, cloud_config.project_of(site), slug, cfg)
    assert {"site", "project_id", "zones", "dns_zone", "site_facts"} <= set(run.outputs)
    assert sc.check_facts(site, run) == []


def test_entry_point_refuses_a_stack_of_the_other_project():
    site = ESTATE.site("tholey")

    def program():
        runpy.run_path(str(cloud_config.STACKS_DIR / "zentral" / "__main__.py"), run_name="__main__")
        return {}

    with pytest.raises(cloud_config.ConfigError, match="does not belong"):
        mockrun.run_program(program, "basisit-zentral", "tholey", mockrun.stack_config_from_file(site))


def test_automation_keys_are_required_and_checked():
    """Without the operator's automation key no host of a stack could be reached: a clear error."""
    with pytest.raises(cloud_config.ConfigError, match=r"no automationSshKeys.*pulumi config set --path"):
        cloud_config.automation_keys("bexbach", None)
    with pytest.raises(cloud_config.ConfigError, match="list of SSH public keys"):
        cloud_config.automation_keys("bexbach", ["not a key"])
    assert cloud_config.automation_keys("bexbach", [mockrun.MOCK_AUTOMATION_KEY + "\n"]) == (
        mockrun.MOCK_AUTOMATION_KEY,
    )
    site = ESTATE.site("bexbach")
    with pytest.raises(cloud_config.ConfigError, match="no automationSshKeys"):
        mockrun.run_site(ESTATE, site, mockrun.stack_config_from_file(site))


def test_automation_account_missing_from_user_data_is_caught():
    run = run_of("nalbach")
    inst = run.of_type(sc.T_INSTANCE)[0]
    ud = inst.inputs["userData"].replace(f"name: {AUTOMATION_USER}", "name: someone-else")
    assert ud != inst.inputs["userData"]
    broken = replace(
        run, mocks=mockrun.RecordingMocks(resources=[replace(inst, inputs={**inst.inputs, "userData": ud})])
    )
    assert any("automation account" in x for x in sc.check_user_data(ESTATE, broken))


def test_stacks_config_keeps_the_operators_automation_key(tmp_path):
    stacks_cli.sync(ESTATE, tmp_path, check=False)
    target = tmp_path / "kommune" / "Pulumi.tholey.yaml"
    key = f"  basisit-kommune:automationSshKeys:\n  - {mockrun.MOCK_AUTOMATION_KEY}\n"
    target.write_text(target.read_text(encoding="utf-8") + key, encoding="utf-8")
    assert stacks_cli.sync(ESTATE, tmp_path, check=True) == ([], [])
    stacks_cli.sync(ESTATE, tmp_path, check=False)
    assert mockrun.MOCK_AUTOMATION_KEY in target.read_text(encoding="utf-8")
