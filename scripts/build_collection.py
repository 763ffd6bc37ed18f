"""Build the Ansible collection egosaar.basisit from this repository.

    .venv/bin/python scripts/build_collection.py [--out DIR]     (make collection)

Assembles collection/ (galaxy.yml, meta/runtime.yml, README.md, CHANGELOG.md) with roles/,
plugins/ and playbooks/ into a temporary directory and runs `ansible-galaxy collection build` on
that tree (nothing is left in the work tree but the tarball), writing DIR/egosaar-basisit-<version>.tar.gz (default DIR: dist/). roles/ and
playbooks/ stay where they are, so the repository's own ansible.cfg keeps working unchanged.
The collection's version must be the basisit package's: its plugins import that wheel.
Exit status: 0 built (the tarball's path on stdout), 2 a version mismatch or a missing source.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# What the collection carries besides collection/ itself: (source in the repository, ignore).
CONTENT = {
    "roles": shutil.ignore_patterns("*.py", "__pycache__"),  # roles/gendocs.py writes docs, no role
    "plugins": shutil.ignore_patterns("__pycache__", "*.pyc"),
    "playbooks": shutil.ignore_patterns("__pycache__"),
}


def assemble(root: Path, tree: Path) -> dict:
    """Write the collection's tree; returns galaxy.yml's data."""
    galaxy = yaml.safe_load((root / "collection" / "galaxy.yml").read_text(encoding="utf-8"))
    package = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    if str(galaxy.get("version")) != package:
        raise SystemExit(
            f"collection/galaxy.yml: version {galaxy.get('version')!r} is not the basisit package's "
            f"(pyproject.toml: {package!r}); the plugins need that wheel: set both to one version"
        )
    shutil.copytree(root / "collection", tree)
    for name, ignore in CONTENT.items():
        shutil.copytree(root / name, tree / name, ignore=ignore)
    return galaxy


def build(root: Path, out: Path) -> Path:
    galaxy_cli = Path(sys.executable).parent / "ansible-galaxy"
    with tempfile.TemporaryDirectory(prefix="basisit-collection-") as tmp:
        tree = Path(tmp) / "egosaar" / "basisit"
        galaxy = assemble(root, tree)
        out.mkdir(parents=True, exist_ok=True)  # only once the sources are consistent
        cmd = [str(galaxy_cli), "collection", "build", str(tree), "--output-path", str(out), "--force"]
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(1)
    return out / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="where the tarball goes (default: dist/)")
    args = ap.parse_args(argv)
    try:
        tarball = build(ROOT, args.out.resolve())
    except SystemExit as e:
        if isinstance(e.code, str):
            print(f"build_collection: {e.code}", file=sys.stderr)
            return 2
        raise
    print(tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
