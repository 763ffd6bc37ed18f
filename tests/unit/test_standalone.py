"""The repository stands alone: nothing it ships points outside itself.

A fresh clone, alone in a directory, has no sibling checkout: no tracked file may cite one
(`../shared/...`, an absolute path of the machine it was written on, or the reference notes that
were never part of the product), and every relative link in the README and the docs resolves to a
file inside the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Paths and documents outside the repository that files were once written against.
OUTSIDE = re.compile(r"\.\./shared\b|/work/(?:shared|main)\b|LAB-NOTES|shared/(?:DESIGN|STYLE)\.md")
# Never part of the tracked tree (see .gitignore); used when git is not available.
UNTRACKED = {".git", ".venv", ".basisit", ".ansible", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
# Inline markdown links and images: [text](target) / ![alt](target); a title after a space is dropped.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if x not in UNTRACKED and not x.endswith(".egg-info")]
            files += [Path(d) / n for n in names]
        return files


def text_of(path: Path) -> str | None:
    if not path.is_file():  # deleted in the work tree, not yet committed
        return None
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "reference").glob("*.md"))]


def test_the_tree_is_listed():
    files = {p.relative_to(ROOT).as_posix() for p in tracked_files()}
    assert {"README.md", "reference/saarland-gemeinden.csv", "docs/design.md"} <= files


def test_no_tracked_file_points_outside_the_repository():
    me = Path(__file__).resolve()
    found = []
    for path in tracked_files():
        if path.resolve() == me:
            continue
        text = text_of(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if m := OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)}")
    assert not found, "references outside the repository:\n" + "\n".join(found)


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    in_code = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            out += [(n, m.group(1)) for m in LINK.finditer(line)]
    return out


def test_markdown_links_are_found():
    # The link pattern sees the README's links (guards the test below against matching nothing).
    targets = {t for _, t in links(ROOT / "README.md")}
    assert "docs/design.md" in targets and "docs/lab.md" in targets


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(doc: Path):
    bad = []
    for n, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # https:, mailto:, an anchor on the same page
        rel = target.split("#", 1)[0]
        resolved = (doc.parent / rel).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{doc.name}:{n}: {target} points outside the repository")
        elif not resolved.exists():
            bad.append(f"{doc.name}:{n}: {target} does not exist")
    assert not bad, "\n".join(bad)


def test_pytest_tests_collects_every_suite():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    suites = {line.split("/")[1] for line in p.stdout.splitlines() if line.startswith("tests/") and "::" in line}
    assert suites == {"unit", "lab", "compliance"}, p.stdout[-3000:]
