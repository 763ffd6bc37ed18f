"""The compliance suite: one module per role, cross-host suites, control ids on every check.

Run it through `basisit verify` (which writes the run context and the ssh_config and probes every
host first). A direct `pytest tests/compliance` checks every realised Kommune of the default
state directory; the testinfra way, `pytest tests/compliance --hosts=ansible://nalbach
[--ansible-inventory=inventory]`, checks the hosts those patterns name in the Ansible inventory
(groups or host names, globs, comma-separated; see pytest_configure below and docs/verify.md).

Conventions (see basisit/verify/suite.py for the machinery):
- a module targets the hosts of one inventory role: `pytestmark = pytest.mark.role("gateway")`
  (`any` = every host); the `target` argument is parametrised with those hosts and `host` is the
  testinfra host for it;
- every check carries its control ids: `@pytest.mark.controls("gs:SYS.1.3.A8", ...)`;
- every check names the role feature it verifies: `@pytest.mark.feature("base/sshd")`. Checks for
  features not in LANDED (or whose task file is missing from roles/) are skipped as "gated:" and
  listed apart from the results: a check for a feature that does not exist yet neither passes nor
  blocks a run. Add a feature here once the role implements it and the check passed in the lab;
- a check that does not apply to a host calls `not_applicable(reason)`;
- a host that does not answer over SSH (after one retry) is *unreachable*: its checks are
  reported with that state, never as failed (see suite.reachable and targets.retry_transport);
- no sleeps, no reruns: a probe waits only as long as its own timeout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from basisit import sitefacts
from basisit.validate import InventoryError, load_estate
from basisit.verify import plugin
from basisit.verify import targets as tg
from basisit.verify.suite import (  # noqa: F401  (fixtures and hook)
    all_targets,
    gate,
    host,
    pytest_generate_tests,
    reachable,
)

# Role features whose checks run: every role's main feature that has passed in the lab. A
# feature named here whose task file is missing from roles/ stays gated (see suite.gate).
LANDED = {
    *(
        f"base/{f}"
        for f in (
            "admins",
            "sudo",
            "sshd",
            "updates",
            "time",
            "journal",
            "sysctl",
            "firewall",
            "banner",
            "audit",
            "login",
            "coredump",
            "modprobe",
            "cron",
            "patching",
        )
    ),
    *(f"gateway/{f}" for f in ("forward", "nat", "dns", "dhcp", "ntp", "vpn", "underlay")),
    "vpn_hub/tunnel",
    "vpn_hub/routes",
    "ad_dc",
    "ad_dc/probe",
    "ad_dc/join",
    "ad_dc/join_account",
    "ad_dc/password",
    "ad_dc/prune",
    "domain_member",
    "endpoint",
    "backup_client",
    "backup_client/samba",
    "backup_server",
    "backup_server/retired",
    "backup_retention",
    "log_host",
    "package_proxy",
}


ROOT = Path(__file__).resolve().parents[2]
_SELECTED = pytest.StashKey[tuple[Path, str]]()  # (the run directory, the header line)


def pytest_configure(config: pytest.Config) -> None:
    for m in plugin.MARKERS:
        config.addinivalue_line("markers", m)
    specs = config.getoption("hosts", None)  # testinfra's --hosts
    if specs and not os.environ.get(tg.CONTEXT_ENV) and not hasattr(config, "workerinput"):
        _select_hosts(config, specs)


def _select_hosts(config: pytest.Config, specs: str) -> None:
    """--hosts=ansible://PATTERN: the run context for those hosts, as `basisit verify` writes it
    (the ssh_config from the site facts, the other realised hosts as probe sources), in a run
    directory of its own that pytest-xdist's workers find through the environment."""
    source = Path(
        config.getoption("ansible_inventory", None) or os.environ.get("BASISIT_INVENTORY", ROOT / "inventory")
    )
    inv_dir = source if source.is_dir() else source.parent
    state = sitefacts.state_dir(None)
    try:
        estate = load_estate(inv_dir)
        inventory = tg.ansible_inventory(source, state, ROOT / "ansible.cfg")
        names = tg.select_hosts(specs, inventory)
        hosts = tg.selected_hosts(estate, state, names)
    except InventoryError as e:
        raise pytest.UsageError(f"{inv_dir}: invalid inventory\n{e.report()}") from None
    except (tg.SelectionError, sitefacts.FactsError) as e:
        raise pytest.UsageError(str(e)) from None
    checked = [h.name for h in hosts if h.check]
    if not checked:
        raise pytest.UsageError(
            f"--hosts {specs}: none of its {len(names)} hosts is realised (no site facts in "
            f"{sitefacts.facts_dir(state)}); run `basisit lab up --kommune SLUG` or `basisit facts import`"
        )
    tg.verify_dir(state).mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="pytest-hosts-", dir=tg.verify_dir(state)))
    cfg = tg.write_ssh_config(hosts, state)
    kommunen = sorted({h.kommune for h in hosts if h.check})
    context = tg.write_context(run_dir / "context.json", hosts, cfg, kommunen, inv_dir)
    os.environ[tg.CONTEXT_ENV] = str(context)
    skipped = len(names) - len(checked)
    header = f"basisit: --hosts {specs}: {len(checked)} hosts of {', '.join(kommunen)}" + (
        f" ({skipped} not realised: not checked)" if skipped else ""
    )
    config.stash[_SELECTED] = (run_dir, header)


def pytest_report_header(config: pytest.Config) -> str | None:
    selected = config.stash.get(_SELECTED, None)
    return selected[1] if selected else None


def pytest_unconfigure(config: pytest.Config) -> None:
    selected = config.stash.get(_SELECTED, None)
    if selected:
        os.environ.pop(tg.CONTEXT_ENV, None)
        shutil.rmtree(selected[0], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gate(items, LANDED)
    if config.getoption("hosts", None):
        _deselect_flows_of_other_hosts(config, items)


def _deselect_flows_of_other_hosts(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under --hosts, a cross-host case (a flow from `name` to `dst`, test_reachability) runs only
    when one of its ends is a selected host; the other hosts of its Kommune are probe sources."""
    checked = {t.name for t in all_targets()}
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        cases = [v for v in (cs.params.values() if cs else []) if hasattr(v, "dst") and hasattr(v, "name")]
        (drop if cases and not any({c.name, c.dst} & checked for c in cases) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
