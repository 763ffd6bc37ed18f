"""The basisit_wg_key lookup: a WireGuard key pair made once on the control host, kept encrypted 0600."""

from __future__ import annotations

import base64
import importlib.util
import stat

import pytest
from conftest import ROOT

from basisit import secrets as store

spec = importlib.util.spec_from_file_location("basisit_wg_key", ROOT / "plugins" / "lookup" / "basisit_wg_key.py")
wg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wg)

# RFC 7748 section 6.1: Alice's X25519 private and public key (what `wg pubkey` computes).
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def _b64(hexstr: str) -> str:
    return base64.b64encode(bytes.fromhex(hexstr)).decode()


def test_creates_a_private_key_file_once(tmp_path):
    path = tmp_path / "secrets" / "nalbach" / "wireguard.key"
    first = wg.key_pair(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(base64.b64decode(first["private"])) == 32 and len(base64.b64decode(first["public"])) == 32
    assert wg.key_pair(str(path)) == first  # read again, never regenerated
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;") and first["private"] not in path.read_text()
    assert store.read_text(path).strip() == first["private"]


def test_public_key_is_the_x25519_public_of_the_private(tmp_path):
    path = tmp_path / "k"
    path.write_text(_b64(ALICE_PRIVATE) + "\n")  # a plaintext key file of an older state
    assert wg.key_pair(str(path)) == {"private": _b64(ALICE_PRIVATE), "public": _b64(ALICE_PUBLIC)}
    assert store.is_encrypted(path) and stat.S_IMODE(path.stat().st_mode) == 0o600  # migrated
    assert wg.key_pair(str(path))["public"] == _b64(ALICE_PUBLIC)


def test_a_damaged_key_file_is_named(tmp_path):
    path = tmp_path / "k"
    path.write_text("not a key\n")
    with pytest.raises(wg.AnsibleLookupError, match=f"{path}: not a WireGuard private key"):
        wg.key_pair(str(path))


def test_a_key_file_of_another_vault_key_is_named_with_the_key(tmp_path, monkeypatch):
    path = tmp_path / "k"
    wg.key_pair(str(path))
    other = tmp_path / "other-key"
    other.write_text("another vault password\n")
    other.chmod(0o600)
    monkeypatch.setenv("BASISIT_VAULT_PASSWORD_FILE", str(other))
    with pytest.raises(wg.AnsibleLookupError, match=f"{path}: cannot be decrypted with the vault key {other}"):
        wg.key_pair(str(path))
