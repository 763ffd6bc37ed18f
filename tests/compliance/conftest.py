"""The compliance suite: one module per role, cross-host suites, control ids on every check.

Run it through `basisit verify` (which writes the run context and the ssh_config and probes every
host first). A direct `pytest tests/compliance` checks every realised Kommune of the default
state directory.

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

import pytest

from basisit.verify import plugin
from basisit.verify.suite import gate, host, pytest_generate_tests, reachable  # noqa: F401  (fixtures and hook)

# Role features whose checks run: every role's main feature that has passed in the lab. A
# feature named here whose task file is missing from roles/ stays gated (see suite.gate).
LANDED = {
    *(
        f"base/{f}"
        for f in ("admins", "sudo", "sshd", "updates", "time", "journal", "sysctl", "firewall", "banner", "audit")
    ),
    *(f"gateway/{f}" for f in ("forward", "nat", "dns", "dhcp", "ntp", "vpn")),
    "vpn_hub/tunnel",
    "ad_dc",
    "ad_dc/probe",
    "ad_dc/join",
    "domain_member",
    "endpoint",
    "backup_client",
    "backup_server",
    "log_host",
}


def pytest_configure(config: pytest.Config) -> None:
    for m in plugin.MARKERS:
        config.addinivalue_line("markers", m)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    gate(items, LANDED)
