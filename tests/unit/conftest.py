"""Shared fixtures: a private copy of the shipped inventory that tests may break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from basisit import cli

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory"


def model_hosts(site, **extra) -> dict[str, dict]:
    """The site facts' host records of a site as the model plans them (roles, addresses, the
    management address as ansible_host), plus `extra` fields on every host (e.g. ansible_port)."""
    return {
        h.name: {
            "roles": list(h.roles),
            "addresses": {z: str(a) for z, a in h.addresses.items()},
            "ansible_host": str(h.address),
            **extra,
        }
        for h in site.hosts
    }


@pytest.fixture(autouse=True)
def vault_key_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test's own default vault key (basisit.secrets): never the developer's ~/.config one."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("BASISIT_VAULT_PASSWORD_FILE", raising=False)
    return home


@pytest.fixture(scope="session")
def planned_listing(tmp_path_factory) -> dict:
    """`ansible-inventory -i inventory --list` of the shipped model with an empty state directory
    (nothing realised), run once per test process for every module that reads it. Read-only."""
    from test_inventory_plugin import inventory_list

    return inventory_list(tmp_path_factory.mktemp("state"))


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    """A copy of inventory/ (model files only) in a temporary directory."""
    dst = tmp_path / "inventory"
    shutil.copytree(INVENTORY, dst, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
    return dst


def edit(path: Path, change) -> None:
    """Load a YAML file, let `change(data)` modify it, write it back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def run(capsys):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        rc = cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run
