"""The admins' local passwords: SHA-512 crypt as glibc/libxcrypt computes it, and the lookup
`basisit_admin_password` that generates the vaulted password and hands over only its hash."""

from __future__ import annotations

import importlib.util
import shutil
import stat
import subprocess

import pytest
from ansible.errors import AnsibleLookupError
from conftest import ROOT

from basisit import pwhash
from basisit import secrets as store

spec = importlib.util.spec_from_file_location(
    "basisit_admin_password", ROOT / "plugins" / "lookup" / "basisit_admin_password.py"
)
ap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ap)

# Ulrich Drepper's test vectors of the specification ("Unix crypt using SHA-256 and SHA-512").
VECTORS = [
    (
        "Hello world!",
        "saltstring",
        5000,
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "Hello world!",
        "saltstringsaltstring",
        10000,
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "This is just a test",
        "toolongsaltstring",
        5000,
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "anotherlongsaltstring",
        1400,
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
]


@pytest.mark.parametrize(("password", "salt", "rounds", "expected"), VECTORS)
def test_specification_vectors(password, salt, rounds, expected):
    assert pwhash.matches(password, expected)
    got = pwhash.sha512_crypt(password, salt, rounds)
    assert got.rsplit("$", 1)[1] == expected.rsplit("$", 1)[1]
    assert not pwhash.matches(password + "x", expected)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
@pytest.mark.parametrize("password", ["k7.Qz-abcDEF_0123456789x", "ä€ß Umlaut", "x" * 130, "p"])
def test_same_as_openssl(password):
    salt = pwhash.salt_for("nalbach-dc1", "ops-ego")
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=(password + "\n").encode(), capture_output=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == pwhash.sha512_crypt(password, salt)


def test_salt_is_stable_per_host_and_admin_and_not_from_the_password():
    a = pwhash.salt_for("nalbach-dc1:ops-ego")
    assert a == pwhash.salt_for("nalbach-dc1:ops-ego") and len(a) == 16 and set(a) <= set(pwhash.ITOA64)
    assert len({a, pwhash.salt_for("nalbach-gw:ops-ego"), pwhash.salt_for("nalbach-dc1:ops-taskforce")}) == 3


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="rounds"):
        pwhash.sha512_crypt("x", "salt", 999)
    with pytest.raises(ValueError, match="salt"):
        pwhash.sha512_crypt("x", "sa$lt")
    for field in ("", "!", "*", "!$6$rounds=65536$abc$x", "$y$j9T$abc$def", "$6$rounds=10$s$" + "a" * 86):
        assert not pwhash.matches("x", field)


def test_lookup_generates_once_and_returns_only_the_hash(tmp_path):
    path = tmp_path / "secrets" / "_admins" / "ops-ego"
    h1 = ap.password_hash(str(path), salt="nalbach-dc1:ops-ego", min_length=12, rounds=65536)
    h2 = ap.password_hash(str(path), salt="nalbach-dc1:ops-ego", min_length=12, rounds=65536)
    other_host = ap.password_hash(str(path), salt="nalbach-gw:ops-ego", min_length=12, rounds=65536)
    password = store.value(path)
    assert h1 == h2  # the next converge sets the same hash: no change
    assert h1.startswith(f"$6$rounds=65536${pwhash.salt_for('nalbach-dc1:ops-ego')}$")
    assert other_host != h1 and pwhash.matches(password, other_host) and pwhash.matches(password, h1)
    assert password not in h1
    assert store.is_encrypted(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(password) == 24 and ap._secret_lookup.violations(password, 12) == []


def test_lookup_length_follows_the_policy_minimum(tmp_path):
    path = tmp_path / "ops-ego"
    ap.password_hash(str(path), salt="h:ops-ego", length=24, min_length=30)
    assert len(store.value(path)) == 30


def test_lookup_names_an_undecryptable_file_without_its_content(tmp_path, monkeypatch):
    path = tmp_path / "ops-ego"
    ap.password_hash(str(path), salt="h:ops-ego")
    key = tmp_path / "other-key"
    key.write_text("another key\n")
    key.chmod(0o600)
    monkeypatch.setenv(store.VAULT_ENV, str(key))
    with pytest.raises(
        AnsibleLookupError, match=r"local password of admin ops-ego: .*ops-ego: cannot be decrypted"
    ) as e:
        ap.password_hash(str(path), salt="h:ops-ego", what="local password of admin ops-ego")
    assert "$ANSIBLE_VAULT" not in str(e.value)
