"""The basisit_secret lookup: generated secrets satisfy the policy by construction, kept 0600."""

from __future__ import annotations

import importlib.util
import stat
import string
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT

from basisit import secrets as store

spec = importlib.util.spec_from_file_location("basisit_secret", ROOT / "plugins" / "lookup" / "basisit_secret.py")
bs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bs)


def samba_complex(pw: str, account: str = "Administrator") -> bool:
    """Samba's complexity rule (check_password_quality): 3 of the categories, no account name."""
    cats = [
        any(c in string.ascii_uppercase for c in pw),
        any(c in string.ascii_lowercase for c in pw),
        any(c in string.digits for c in pw),
        any(not c.isalnum() for c in pw),
    ]
    return sum(cats) >= 3 and account.lower() not in pw.lower()


def test_every_generation_satisfies_the_policy():
    seen = set()
    for _ in range(20_000):
        pw = bs.generate(24)
        assert len(pw) == 24
        assert bs.violations(pw, 12) == []
        assert samba_complex(pw)
        assert pw[0].isalnum()
        seen.add(pw)
    assert len(seen) == 20_000  # no repeats


def test_shortest_secret_still_has_every_class():
    for _ in range(10_000):
        assert bs.violations(bs.generate(5), 5) == []
    with pytest.raises(ValueError):
        bs.generate(4)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abcdefghijklmnopqrstuvwx", "no upper-case letter"),  # the letters-only Administrator password
        ("ABCDEFGHIJKL1234.-_aaaa", None),
        ("Abc1.", "shorter than 12"),
        ("Abcdefghijkl1234", "no symbol"),
        ("Abcdefghijkl1234.,", "outside"),
        ("-Abcdefghijkl1234", "starts with a symbol"),
    ],
)
def test_violations_name_the_rule(value, reason):
    found = bs.violations(value, 12)
    if reason is None:
        assert found == []
    else:
        assert any(reason in f for f in found), found
        assert all(value not in f for f in found)


def test_created_once_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "secrets" / "nalbach" / "probe.secret"
    first = bs.secret(str(path), length=24, min_length=12)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;") and first not in path.read_text()
    assert store.read_text(path) == first + "\n"
    assert bs.secret(str(path), length=24, min_length=12) == first


def test_length_never_below_the_standard(tmp_path):
    assert len(bs.secret(str(tmp_path / "s"), length=8, min_length=14)) == 14


def test_invalid_secret_never_applied_is_regenerated_with_a_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(bs.display, "warning", warnings.append)
    path = tmp_path / "ad-administrator"
    path.write_text("lettersonlylettersonlyab\n")
    value = bs.secret(str(path), replace_invalid=True, what="AD Administrator password of bexbach")
    assert value != "lettersonlylettersonlyab" and bs.violations(value, 12) == []
    assert (
        store.read_text(path) == value + "\n"
        and store.is_encrypted(path)
        and stat.S_IMODE(path.stat().st_mode) == 0o600
    )
    assert len(warnings) == 1 and "regenerated" in warnings[0] and "no upper-case letter" in warnings[0]
    assert "bexbach" in warnings[0] and "lettersonly" not in warnings[0] and value not in warnings[0]


def test_invalid_secret_in_use_is_kept_with_a_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(bs.display, "warning", warnings.append)
    path = tmp_path / "restic-repository"
    path.write_text("Abcdefghij0123456789Abcdefghij0123456789 salt=xyz\n")  # ansible.builtin.password's format
    assert bs.secret(str(path), length=40) == "Abcdefghij0123456789Abcdefghij0123456789"
    assert len(warnings) == 1 and "kept" in warnings[0] and "Abcdefghij" not in warnings[0]
    # migrated: the same value, now encrypted (the salt suffix of the old format dropped)
    assert store.is_encrypted(path) and store.read_text(path) == "Abcdefghij0123456789Abcdefghij0123456789\n"


def test_concurrent_callers_read_one_value(tmp_path):
    path = str(tmp_path / "k" / "ad-administrator")
    (tmp_path / "k").mkdir(mode=0o700)
    (tmp_path / "k" / "ad-administrator").write_text("onlyletters\n")
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: bs.secret(path, replace_invalid=True), range(16)))
    assert len(values) == 1


def test_a_valid_plaintext_secret_is_kept_and_encrypted(tmp_path):
    path = tmp_path / "probe.secret"
    path.write_text("Abcdefghij0123456789-x\n")
    path.chmod(0o644)
    assert bs.secret(str(path), replace_invalid=True) == "Abcdefghij0123456789-x"
    assert store.is_encrypted(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "Abcdefghij" not in path.read_text()


def test_must_exist_names_the_missing_file(tmp_path):
    path = tmp_path / "nalbach" / "ad-administrator"
    with pytest.raises(bs.AnsibleLookupError, match=f"AD password: no secret {path}"):
        bs.secret(str(path), must_exist=True, what="AD password")
    assert not path.exists()
