"""SHA-512 crypt (`$6$`, glibc/libxcrypt) hashes of the admins' local passwords, on the control host.

Base sets each named admin's password on every host as a crypt hash (roles/base, lookup
`basisit_admin_password`); `basisit verify` checks that the hash on a host is the one of the
vaulted password. Both compute the hash here, in Python alone: ansible-core's `password_hash`
needs passlib (not a dependency) and Python's `crypt` module leaves the standard library in 3.13.

The algorithm is Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" (the one glibc,
libxcrypt, `openssl passwd -6` and `mkpasswd -m sha-512` implement); tests/unit/test_pwhash.py
compares it with `openssl passwd -6` and with libcrypt.

The salt is derived from the host and the admin's name (`salt_for`), not from the password
(a salt computed from the password would let a reader of /etc/shadow test guesses at the speed of
one SHA-256 instead of the 65536 rounds). The same password, host and name give the same hash, so
the user module sees no change on the next converge; every host and admin has its own salt.
"""

from __future__ import annotations

import hashlib
import hmac
import re

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT = 5000  # the algorithm's default: then no `rounds=` in the hash
ROUNDS_MIN, ROUNDS_MAX = 1000, 999_999_999
SALT_MAX = 16
# The order in which the 64 bytes of the final digest are encoded (from the specification).
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
]  # fmt: skip
HASH_RE = re.compile(r"^\$6\$(?:rounds=(?P<rounds>[0-9]+)\$)?(?P<salt>[^$]{0,16})\$(?P<hash>[./0-9A-Za-z]{86})$")


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int = ROUNDS_DEFAULT) -> str:
    """The `$6$` hash of `password` with `salt` (its first 16 characters) and `rounds`."""
    if not ROUNDS_MIN <= rounds <= ROUNDS_MAX:
        raise ValueError(f"rounds {rounds} outside {ROUNDS_MIN}..{ROUNDS_MAX}")
    if not set(salt) <= set(ITOA64):
        raise ValueError(f"salt characters outside {ITOA64}")
    p = password.encode("utf-8")
    s = salt[:SALT_MAX].encode("ascii")
    b = hashlib.sha512(p + s + p).digest()
    a = hashlib.sha512(p + s)
    a.update(_repeat(b, len(p)))
    i = len(p)
    while i > 0:
        a.update(b if i & 1 else p)
        i >>= 1
    a_digest = a.digest()
    p_bytes = _repeat(hashlib.sha512(p * len(p)).digest(), len(p))
    s_bytes = _repeat(hashlib.sha512(s * (16 + a_digest[0])).digest(), len(s))
    c = a_digest
    for r in range(rounds):
        h = hashlib.sha512(p_bytes if r & 1 else c)
        if r % 3:
            h.update(s_bytes)
        if r % 7:
            h.update(p_bytes)
        h.update(c if r & 1 else p_bytes)
        c = h.digest()
    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64(0, 0, c[63], 2)
    prefix = "$6$" if rounds == ROUNDS_DEFAULT else f"$6$rounds={rounds}$"
    return f"{prefix}{s.decode()}${encoded}"


def salt_for(*parts: str) -> str:
    """A 16-character salt derived from `parts` (host, admin name): stable, different per host and
    admin, independent of the password."""
    digest = hashlib.sha256("\0".join(("basisit-admin-password", *parts)).encode("utf-8")).digest()
    return "".join(ITOA64[x & 0x3F] for x in digest[:SALT_MAX])


def matches(password: str, crypt_hash: str) -> bool:
    """Whether a `$6$` hash (as /etc/shadow holds it) is the hash of `password`."""
    m = HASH_RE.match(crypt_hash)
    if not m:
        return False
    rounds = int(m["rounds"]) if m["rounds"] else ROUNDS_DEFAULT
    if not ROUNDS_MIN <= rounds <= ROUNDS_MAX:
        return False
    computed = sha512_crypt(password, m["salt"], rounds).rsplit("$", 1)[1]
    return hmac.compare_digest(computed, m["hash"])
