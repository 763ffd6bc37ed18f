"""No plaintext secret is ever committed: scan every tracked file."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# A secret-looking key assigned a literal value (not a template, lookup, vault or path).
ASSIGNMENT = re.compile(
    r"""(?ix)\b([a-z_]*(password|passwd|secret|token|psk|private_key)[a-z_]*)\s*[:=]\s*["']?([^\s"'#{}]{8,})"""
)
NOT_SECRET_SUFFIXES = ("_policy", "_length", "_age_days", "_settings")  # settings about secrets
# update_password: ansible.builtin.user's switch (always / on_create); letters_only_admin_password: the lab
# tests' deliberately invalid seed (tests/lab/playbook.py) that basisit_secret must replace, never a real secret.
NOT_SECRET_KEYS = {"update_password", "letters_only_admin_password"}
# @SECRET@ is the placeholder the samba-tool wrapper replaces with the password it reads on stdin.
ALLOWED_VALUE = re.compile(
    r"(?i)(lookup|vault|\{\{|_file|_path|/|\.|changeme|example|none|null|true|false|\$|^@[A-Z_]+@)"
)


SELF = "tests/unit/test_no_secrets.py"  # holds the scanner's own positive samples


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


def findings(name: str, text: str) -> list[str]:
    hits = []
    if PRIVATE_KEY.search(text):
        hits.append(f"{name}: contains a private key")
    for n, line in enumerate(text.splitlines(), 1):
        m = ASSIGNMENT.search(line)
        if (
            m
            and not ALLOWED_VALUE.search(m.group(3))
            and not m.group(1).lower().endswith(NOT_SECRET_SUFFIXES)
            and m.group(1).lower() not in NOT_SECRET_KEYS
        ):
            hits.append(f"{name}:{n}: {m.group(1)} is assigned a literal value")
    return hits


def test_scanner_finds_what_it_should():
    assert findings("x", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    assert findings("x", "ad_admin_password: Sup3rGeheim2024")
    assert findings("x", 'RESTIC_PASSWORD="hunter2hunter2"')
    assert not findings("x", "ad_admin_password: \"{{ lookup('ansible.builtin.password', p) }}\"")
    assert not findings("x", "restic_password_file: /etc/restic/password")
    assert not findings("x", "      - --password=@SECRET@")
    assert findings("x", "      - --password=S3cret@xyz")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_plaintext_secret_is_tracked():
    hits = []
    for name in tracked_files():
        path = ROOT / name
        if name == SELF or not path.is_file() or path.suffix in {".png", ".sqlite", ".whl"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.startswith("$ANSIBLE_VAULT;"):
            continue  # encrypted with ansible-vault
        hits += findings(name, text)
    assert not hits, "\n".join(hits)
