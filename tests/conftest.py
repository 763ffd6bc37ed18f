"""The test suites of the repository, and what a bare `pytest` runs.

- tests/unit        no root, no lab (`make unit`; the default of a bare `pytest`)
- tests/lab         real systemd-nspawn hosts, root (`make lab-test`); skipped when not root,
                    a failure under CI=true
- tests/compliance  the nightly compliance suite, run by `basisit verify`

`pytest tests` collects all three (pyproject.toml: `--import-mode=importlib`, since unit and lab
share module names).
"""

from __future__ import annotations

SUITES = ("tests/unit", "tests/lab", "tests/compliance")


def pytest_report_header(config) -> str | None:
    if not config.args or [str(a) for a in config.args] == list(config.getini("testpaths")):
        return f"suites: {', '.join(SUITES)}; this run: tests/unit only (`pytest tests` runs every suite)"
    return None
