"""The compliance suite the testinfra way: `pytest tests/compliance --hosts=ansible://<pattern>
--ansible-inventory=inventory` checks the hosts the pattern names in the Ansible inventory.

No lab: the state directory holds site facts at the model's addresses (as the lab writes them,
with an SSH port nothing answers on), and only collection runs, so nothing connects.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_verify_cli import fake_facts

from basisit.validate import load_estate
from basisit.verify import targets as tg


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("state")
    for slug in ("nalbach", "bexbach", "zentral"):
        fake_facts(state, slug)
    return state


def collect(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (tg.CONTEXT_ENV, "BASISIT_INVENTORY", "PYTEST_ADDOPTS")}
    env["BASISIT_STATE"] = str(state)
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/compliance", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


HOSTS = {h.name for site in load_estate(ROOT / "inventory").sites for h in site.hosts}


def targeted(out: str) -> dict[str, set[str]]:
    """{host: {check}} for the checks whose target is a host (`test_x[nalbach-gw]`)."""
    hosts: dict[str, set[str]] = {}
    for m in re.finditer(r"^tests/compliance/\S+::(\w+)\[([a-z0-9-]+)\]$", out, re.M):
        if m.group(2) in HOSTS:
            hosts.setdefault(m.group(2), set()).add(m.group(1))
    return hosts


def test_hosts_of_a_kommune_group_are_collected_and_no_others(state):
    p = collect(state, "--hosts=ansible://nalbach", "--ansible-inventory=inventory")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    site = load_estate(ROOT / "inventory").kommunen["nalbach"]
    realised = {h.name for h in site.hosts if h.name in fake_facts(state, "nalbach")["hosts"]}
    got = targeted(p.stdout)
    assert set(got) == realised, set(got) ^ realised  # bexbach and zentral are realised, not selected
    assert "test_tunnel_to_hub_is_up" in got["nalbach-gw"] and "test_tunnel_to_hub_is_up" not in got["nalbach-dc1"]
    # cross-host cases: every flow has a selected end (sources from zentral probe into nalbach)
    flows = re.findall(r"^tests/compliance/test_reachability\.py::\w+\[(.+)\]$", p.stdout, re.M)
    assert flows and all("nalbach-" in f for f in flows)


def test_a_host_pattern_and_a_role_group(state):
    p = collect(state, "--hosts=ansible://nalbach-dc1,ansible://bexbach-g*")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    assert set(targeted(p.stdout)) == {"nalbach-dc1", "bexbach-gw"}
    assert "deselected" in p.stdout  # the other nalbach and bexbach hosts' flows
    p = collect(state, "--hosts=ansible://ad_dc", "--ansible-inventory=inventory/basisit.yml")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    assert set(targeted(p.stdout)) == {"nalbach-dc1", "bexbach-dc1"}  # the realised DCs of 52 Kommunen
    p = collect(state, "--hosts=ansible://ad_dc", "-qq", "--verbosity=0")  # the header names the selection
    dcs = sum(len(k.hosts_with_role("ad_dc")) for k in load_estate(ROOT / "inventory").kommunen.values())
    assert f"basisit: --hosts ansible://ad_dc: 2 hosts of bexbach, nalbach ({dcs - 2} not realised: not checked)" in (
        p.stdout
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ssh://nalbach-gw", "expected ansible://PATTERN"),
        ("ansible://nope*", "no group or host of the inventory matches 'nope*'"),
        ("ansible://tholey", "none of its 6 hosts is realised"),
    ],
)
def test_a_selection_that_checks_nothing_is_a_usage_error(state, spec, message):
    p = collect(state, f"--hosts={spec}")
    assert p.returncode == pytest.ExitCode.USAGE_ERROR, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_match_hosts_follows_testinfras_ansible_patterns():
    inventory = {
        "all": {"children": ["kommunen", "ungrouped"]},
        "kommunen": {"children": ["nalbach"]},
        "nalbach": {"hosts": ["nalbach-gw", "nalbach-dc1"]},
        "ad_dc": {"hosts": ["nalbach-dc1", "bexbach-dc1"]},
        "ungrouped": {},
        "_meta": {"hostvars": {}},
    }
    assert tg.match_hosts(inventory, "kommunen") == {"nalbach-gw", "nalbach-dc1"}
    assert tg.match_hosts(inventory, "*-dc1") == {"nalbach-dc1", "bexbach-dc1"}
    assert tg.match_hosts(inventory, "all") == {"nalbach-gw", "nalbach-dc1"}
    assert tg.select_hosts("ansible://nalbach-gw, ansible://ad_dc", inventory) == [
        "bexbach-dc1",
        "nalbach-dc1",
        "nalbach-gw",
    ]
