"""The wheel is complete: installed alone (as the AWX execution environment installs it), the
inventory plugin, the CLI, the site-facts schema and the dashboard templates all work from it.

The wheel is built from a copy of the work tree and installed with `--no-deps` into a fresh venv
that sees the project's dependencies through a .pth file pointing at this venv's site-packages
(a .pth line adds a directory, not its .pth files, so the editable basisit of this venv is not
on the path). Everything runs from a temporary directory, so the source tree cannot be imported
by accident; the test asserts that `basisit` comes from the new venv.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".basisit", ".ansible", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def build_requirement() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"][0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(temporary directory, the new venv's python, environment) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    # The pinned build backend: the one in this venv when it is that version (no network), else
    # pip fetches exactly the pinned one into an isolated build environment.
    name, _, version = build_requirement().partition("==")
    try:
        isolation = [] if importlib.metadata.version(name) == version else None
    except importlib.metadata.PackageNotFoundError:
        isolation = None
    flags = ["--no-build-isolation"] if isolation is not None else []
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags, "-w", str(tmp / "dist"), str(src)], tmp)
    (wheel,) = (tmp / "dist").glob("basisit-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    py = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)], tmp)
    site = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip()
    (Path(site) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    cfg = tmp / "ansible.cfg"
    cfg.write_text(
        "[defaults]\n"
        f"inventory_plugins = {ROOT / 'plugins' / 'inventory'}\n"
        "force_valid_group_names = ignore\n"
        "[inventory]\n"
        "enable_plugins = basisit\n"
        r"ignore_patterns = ^kommunen$, ^standard\.yaml$, ^zentral\.yaml$, ^waivers\.yaml$" + "\n",
        encoding="utf-8",
    )
    shutil.copytree(ROOT / "inventory", tmp / "inventory")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "BASISIT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        BASISIT_STATE=str(tmp / "state"),  # no site facts: the planned addresses
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",  # a plugin error fails the run, not a warning
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true",
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    return tmp, py, env


def test_basisit_is_imported_from_the_wheel(installed):
    tmp, py, env = installed
    out = run([str(py), "-c", "import basisit, sys; print(basisit.__file__); print(sys.path)"], tmp, env)
    location = Path(out.splitlines()[0])
    assert location.is_relative_to(tmp / "venv"), out
    assert str(ROOT) not in out.splitlines()[1].split("'"), "the source tree is on sys.path"


def test_every_subpackage_and_the_package_data_are_in_the_wheel(installed):
    tmp, py, env = installed
    code = (
        "import json, pathlib, pkgutil, importlib, basisit\n"
        "mods = [m.name for m in pkgutil.walk_packages(basisit.__path__, 'basisit.')]\n"
        "from basisit import sitefacts\n"
        "from basisit.report import dashboard\n"
        "import jinja2\n"
        "env = jinja2.Environment(loader=jinja2.FileSystemLoader(dashboard.TEMPLATES))\n"
        "templates = {n: env.get_template(n).filename for n in env.list_templates()}\n"
        "print(json.dumps({'modules': mods, 'schema_id': sitefacts.schema()['$id'],\n"
        "  'schema': str(sitefacts.SCHEMA_PATH), 'templates': templates}))\n"
    )
    got = json.loads(run([str(py), "-c", code], tmp, env))
    source = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "basisit").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    } | {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "basisit").rglob("__init__.py")}
    assert source - {"basisit"} <= set(got["modules"]), f"missing from the wheel: {source - set(got['modules'])}"
    assert got["schema_id"].endswith("site-facts.v1.json")
    assert Path(got["schema"]).is_relative_to(tmp / "venv")
    assert {"base.html.j2", "index.html.j2", "kommune.html.j2"} <= set(got["templates"])
    assert all(Path(f).is_relative_to(tmp / "venv") for f in got["templates"].values())


def test_the_cli_runs_from_the_wheel(installed):
    tmp, _, env = installed
    out = run(
        [str(tmp / "venv" / "bin" / "basisit"), "--inventory", str(tmp / "inventory"), "inventory", "validate"],
        tmp,
        env,
    )
    assert re.search(r"52 Kommunen, 1 central site, \d+ hosts, standard v\d+: valid", out), out


def test_ansible_inventory_runs_against_the_wheel(installed):
    tmp, py, env = installed
    out = run([str(py), "-m", "ansible.cli.inventory", "-i", str(tmp / "inventory"), "--graph"], tmp, env)
    groups = set(re.findall(r"--@([\w-]+):", out))
    assert {"kommunen", "zentral", "wave_modell", "nalbach", "st-wendel", "district_saarlouis"} <= groups, out[:2000]
    assert "nalbach-dc1" in out and "zentral-backup" in out


@pytest.fixture(scope="module")
def collection(installed) -> tuple[Path, Path, dict[str, str]]:
    """(the collection tarball, an inventory directory selecting its plugin by FQCN, environment):
    built by scripts/build_collection.py from the copy of the work tree (into the dist/ beside the
    wheel, as for the execution environment) and installed with ansible-galaxy into a collections
    path of the temporary directory; Ansible there has no inventory_plugins path."""
    tmp, _, env = installed
    src = tmp / "src"
    out = run([sys.executable, str(src / "scripts" / "build_collection.py"), "--out", str(tmp / "dist")], tmp)
    tarball = Path(out.strip())
    assert tarball.name == f"egosaar-basisit-{importlib.metadata.version('basisit')}.tar.gz"
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    collections = tmp / "collections"
    run([galaxy, "collection", "install", "--offline", "-p", str(collections), str(tarball)], tmp, env)
    cfg = tmp / "ansible-collection.cfg"
    cfg.write_text(
        "[defaults]\n"
        f"collections_path = {collections}\n"
        "force_valid_group_names = ignore\n"
        "[inventory]\n"
        "enable_plugins = egosaar.basisit.basisit\n"
        r"ignore_patterns = ^kommunen$, ^standard\.yaml$, ^zentral\.yaml$, ^waivers\.yaml$" + "\n",
        encoding="utf-8",
    )
    inv = tmp / "inventory-fqcn"
    shutil.copytree(tmp / "inventory", inv)
    (inv / "basisit.yml").write_text(
        "plugin: egosaar.basisit.basisit\nkeyed_groups:\n  - key: basisit_site.size | lower\n    prefix: class\n",
        encoding="utf-8",
    )
    return tarball, inv, {**env, "ANSIBLE_CONFIG": str(cfg)}


def test_the_collection_carries_roles_plugins_and_playbooks(installed, collection):
    tmp, _, _ = installed
    installed_at = tmp / "collections" / "ansible_collections" / "egosaar" / "basisit"
    manifest = json.loads((installed_at / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["collection_info"]["namespace"] == "egosaar" and manifest["collection_info"]["name"] == "basisit"
    files = {f["name"] for f in json.loads((installed_at / "FILES.json").read_text(encoding="utf-8"))["files"]}
    roles = {p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir()}
    assert {f"roles/{r}/tasks/main.yml" for r in roles} <= files
    assert {"plugins/inventory/basisit.py", "plugins/lookup/basisit_secret.py", "meta/runtime.yml"} <= files
    assert {f"playbooks/{p.name}" for p in (ROOT / "playbooks").glob("*.yml")} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f == "roles/gendocs.py"]


def test_ansible_inventory_runs_the_installed_collection_plugin(installed, collection):
    """An inventory source `plugin: egosaar.basisit.basisit` (as AWX has it): the collection's
    plugin with the wheel's model; Constructable's keyed_groups too."""
    tmp, py, _ = installed
    _, inv, env = collection
    out = run([str(py), "-m", "ansible.cli.inventory", "-i", str(inv), "--graph", "-vvv"], tmp, env)
    assert "inventory source with ansible_collections.egosaar.basisit.plugins.inventory.basisit plugin" in out, out[
        :3000
    ]
    groups = set(re.findall(r"--@([\w-]+):", out))
    assert {"kommunen", "zentral", "nalbach", "st-wendel", "wave_modell", "class_l"} <= groups, out[-3000:]
    assert "nalbach-dc1" in out and "zentral-backup" in out


def test_ansible_builder_creates_the_execution_environment(installed, collection):
    """`ansible-builder create` accepts execution-environment.yml and puts the wheel and the
    collection in the context; the image installs both."""
    tmp, _, _ = installed
    builder = Path(sys.executable).parent / "ansible-builder"
    if not builder.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("ansible-builder is not installed (make setup installs the dev dependencies)")
        pytest.skip("ansible-builder is not installed in this .venv yet: run make setup")
    shutil.copy(ROOT / "execution-environment.yml", tmp / "execution-environment.yml")  # src: dist, beside it
    run([str(builder), "create", "-f", "execution-environment.yml", "-c", "context"], tmp)
    assert [p.name for p in (tmp / "context" / "_build" / "basisit").glob("basisit-*.whl")] == [
        next((tmp / "dist").glob("basisit-*.whl")).name
    ]
    containerfile = next(p for p in (tmp / "context").iterdir() if p.name in ("Containerfile", "Dockerfile"))
    text = containerfile.read_text(encoding="utf-8")
    assert "pip install --no-deps /tmp/basisit/*.whl" in text
    assert (tmp / "context" / "_build" / "basisit" / collection[0].name).is_file()
    assert "ansible.cli.galaxy collection install --offline -p /usr/share/ansible/collections" in text
    assert "/tmp/basisit/egosaar-basisit-*.tar.gz" in text


def test_the_collection_is_not_built_at_another_version_than_the_wheel(tmp_path):
    """The plugins import the wheel: a galaxy.yml version other than pyproject.toml's is refused."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "build_collection.py", tmp_path / "scripts")
    shutil.copytree(ROOT / "collection", tmp_path / "collection")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    galaxy = tmp_path / "collection" / "galaxy.yml"
    galaxy.write_text(re.sub(r"(?m)^version: .*$", "version: 99.0.0", galaxy.read_text(encoding="utf-8")))
    p = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "build_collection.py"), "--out", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "collection/galaxy.yml: version '99.0.0' is not the basisit package's" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "dist").exists()
