"""Control-host secrets at rest: one home for reading and writing `<state>/secrets/…`.

Every secret the project generates on the control host (AD Administrator and probe passwords,
restic credentials, WireGuard private keys) is stored ansible-vault encrypted (ansible's own
VaultLib, AES256), file 0600 in a 0700 directory, written atomically (temporary file, rename).
The lookups (plugins/lookup/basisit_secret.py, basisit_wg_key.py), `basisit verify`, drift's
redaction and the lab tests all read through `read_text`/`value`, which decrypt transparently. A
plaintext file (an older state) is still read; the lookups re-write it encrypted (`migrate`).

The vault key (the password ansible-vault derives its keys from) is, in this order:

1. `$BASISIT_VAULT_PASSWORD_FILE` when set: it must exist and be 0600 or 0400 (no group or other
   bits), else a clear error naming it. Use it for a key from a team vault, AWX credential, etc.;
2. else `$XDG_CONFIG_HOME/basisit/vault-password` (default `~/.config/basisit/vault-password`),
   created 0600 on first use with one line on stderr saying where.

The default lives outside the repository (the default state `./.basisit` is inside the checkout)
and outside the state (a copy or backup of the state then carries no key for its own secrets);
it is per control-host user, so every state of that user (each lab test's, `make lab`'s) shares
it, and a fresh CI machine or `make lab` needs no setup step. Losing it loses every secret it
encrypted: keep a copy outside the machine.

A file that cannot be decrypted (another key, damaged) raises SecretError naming the file and the
key file used; callers show it without a traceback and exit 2.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets as _random
import string
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VAULT_ENV = "BASISIT_VAULT_PASSWORD_FILE"
VAULT_HEADER = b"$ANSIBLE_VAULT;"
KEY_NAME = "vault-password"


class SecretError(Exception):
    """A secret or the vault key cannot be read or written; the message names the file(s)."""


# --- the vault key ---------------------------------------------------------------------------


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "basisit" / KEY_NAME


def key_file() -> Path:
    """The vault key file in use: $BASISIT_VAULT_PASSWORD_FILE, else the default."""
    env = os.environ.get(VAULT_ENV)
    return Path(env) if env else default_key_file()


def _check_key_file(path: Path, origin: str) -> bytes:
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(f"{origin} {path} does not exist") from None
    except OSError as e:
        raise SecretError(f"{origin} {path}: cannot read it ({e.strerror})") from None
    if st.st_mode & 0o077:
        raise SecretError(
            f"{origin} {path} is mode {oct(st.st_mode & 0o777)[2:]}: it must be 0600 or 0400 (chmod 600 {path})"
        )
    key = data.splitlines()[0].strip() if data.strip() else b""
    if not key:
        raise SecretError(f"{origin} {path} is empty")
    return key


def _create_default(path: Path) -> None:
    """A new random key, 0600, atomically (a concurrent creator's key wins; both then read it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".vault-password-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(_random.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)  # fails if it exists: never replace a key in use
        except FileExistsError:
            return
    finally:
        os.unlink(tmp)
    print(
        f"basisit: created the vault key {path} (0600); it encrypts the secrets under <state>/secrets: "
        f"keep a copy outside this machine (or set ${VAULT_ENV})",
        file=sys.stderr,
    )


def vault_key(create: bool = False) -> tuple[bytes, Path]:
    """The vault password and the file it came from; `create` makes the default key if missing."""
    env = os.environ.get(VAULT_ENV)
    if env:
        path = Path(env)
        return _check_key_file(path, f"${VAULT_ENV}:"), path
    path = default_key_file()
    if create and not path.exists():
        _create_default(path)
    if not path.exists():
        raise SecretError(
            f"no vault key {path} (and ${VAULT_ENV} is not set): the encrypted secrets cannot be read; "
            f"restore the key they were written with"
        )
    return _check_key_file(path, "vault key"), path


def _vault(create: bool):
    from ansible.parsing.vault import VaultLib, VaultSecret  # ansible-core: imported when needed

    key, path = vault_key(create=create)
    return VaultLib([("default", VaultSecret(key))]), path


# --- reading and writing ---------------------------------------------------------------------


def is_encrypted(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(VAULT_HEADER)) == VAULT_HEADER
    except OSError:
        return False


def read_text(path: str | Path) -> str:
    """The plaintext of a secret file (decrypted when encrypted). FileNotFoundError if missing."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise SecretError(f"{path}: cannot read it ({e.strerror})") from None
    if data.startswith(VAULT_HEADER):
        from ansible.errors import AnsibleError

        vault, key_path = _vault(create=False)
        try:
            data = vault.decrypt(data)
        except AnsibleError:
            raise SecretError(
                f"{path}: cannot be decrypted with the vault key {key_path} "
                f"(written with another key, or damaged); set ${VAULT_ENV} to the key it was written with"
            ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{path}: not a text secret (neither ansible-vault nor UTF-8)") from None


def value(path: str | Path) -> str:
    """A password file's value: its first line (an `ansible.builtin.password` ` salt=…` suffix dropped)."""
    return read_text(path).split("\n", 1)[0].rstrip("\r").split(" salt=")[0]


def write(path: str | Path, text: str) -> None:
    """Store `text` (one value; a newline is added) encrypted, 0600, atomically; directory 0700."""
    path = Path(path)
    vault, _ = _vault(create=True)
    data = vault.encrypt((text.rstrip("\n") + "\n").encode("utf-8"))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".basisit-secret-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def migrate(path: str | Path) -> bool:
    """Re-write a plaintext secret file encrypted (same content); True if it was plaintext."""
    path = Path(path)
    if is_encrypted(path):
        return False
    write(path, read_text(path))
    return True


@contextmanager
def locked(directory: str | Path) -> Iterator[None]:
    """An exclusive lock on a secrets directory (created 0700): one writer, readers see one value."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(dfd)


def files(secrets_dir: str | Path) -> list[Path]:
    """Every secret file under a secrets directory (lock-free temporaries excluded)."""
    root = Path(secrets_dir)
    if not root.is_dir():
        return []
    return sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith(".basisit-secret-"))


# --- generation shared with the lookups ------------------------------------------------------


UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
SYMBOLS = "-._"
ALPHABET = UPPER + LOWER + DIGITS + SYMBOLS
CLASSES = (
    ("upper-case letter", UPPER),
    ("lower-case letter", LOWER),
    ("digit", DIGITS),
    (f"symbol of {SYMBOLS}", SYMBOLS),
)


def password(length: int) -> str:
    """A password of `length` characters with every class of CLASSES, first character alphanumeric
    (the lookup basisit_secret and `rotate` generate with it)."""
    if length < len(CLASSES) + 1:
        raise ValueError(f"a secret needs at least {len(CLASSES) + 1} characters, not {length}")
    rng = _random.SystemRandom()
    chars = [rng.choice(chars) for _, chars in CLASSES]
    chars += [rng.choice(ALPHABET) for _ in range(length - len(chars))]
    while True:
        rng.shuffle(chars)
        if chars[0] in UPPER + LOWER + DIGITS:
            return "".join(chars)


def wireguard_private_key() -> str:
    """A new X25519 private key in WireGuard's base64 encoding."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


# --- rotation ---------------------------------------------------------------------------------

PREVIOUS = ".previous"

# What each kind's next converge does with a new value (roles/*/tasks). `files`: file name ->
# length of a generated password (None: `generate` makes the value); the same lengths as the
# roles' lookups (tests/unit/test_secrets.py compares them), never below the standard's
# password_policy.min_length. `keep_previous`: files whose old value the converge needs to switch
# (kept encrypted as `<file>.previous` until the converge applied the new one; a rotation while
# one exists is refused).
KINDS: dict[str, dict] = {
    "wireguard": {
        "files": {"wireguard.key": None},
        "generate": wireguard_private_key,  # the roles need no old value: none is kept
        "keep_previous": [],
        "how": (
            "the site gateway's wg0.conf (roles/gateway) and the hub's peer entry (roles/vpn_hub) are "
            "templated from the key on every converge and reloaded: converge the Kommune and zentral "
            "together (`-l SLUG,zentral`); the tunnel is down between the two plays"
        ),
    },
    "restic": {
        "files": {"restic-repository": 40, "restic-rest": 32},
        "keep_previous": ["restic-repository"],
        "how": (
            "converge the Kommune and zentral together (`-l SLUG,zentral`): zentral's management host adds "
            "a repository key for the new password with the old one (basisit-restic-rekey add, through "
            "the maintenance listener) and retention switches to it, the repository host hashes the new "
            "REST credential, the Kommune's backup clients get both, then the old password's key is "
            "removed and restic-repository.previous dropped; the REST credential works only once both "
            "sides converged"
        ),
    },
    "probe": {
        "files": {"probe.secret": 24},
        "keep_previous": [],
        "how": (
            "roles/ad_dc (tasks/password.yml) compares the probe account's NT hash on the primary DC with "
            "the secret and resets the password when they differ: converge the Kommune (`-l SLUG`)"
        ),
    },
    "ad-admin": {
        "files": {"ad-administrator": 24},
        "keep_previous": [],
        "how": (
            "roles/ad_dc (tasks/password.yml) resets the domain Administrator's password on the primary "
            "DC when its NT hash differs from the secret, before anything authenticates with it: converge "
            "the Kommune (`-l SLUG`); joins are unaffected (members join with basisit-join, join.secret)"
        ),
    },
}


def pending(secrets_dir: str | Path, slug: str) -> list[Path]:
    """The `.previous` files of `slug`: rotations whose converge has not switched yet."""
    directory = Path(secrets_dir) / slug
    names = [name + PREVIOUS for kind in KINDS.values() for name in kind["keep_previous"]]
    return [directory / n for n in names if (directory / n).exists()]


def _new_value(kind: str, length: int | None, min_length: int) -> str:
    spec = KINDS[kind]
    return spec["generate"]() if length is None else password(max(length, min_length))


def rotate(secrets_dir: str | Path, slug: str, kinds: list[str], min_length: int = 12) -> list[str]:
    """Give each kind of `slug` a new value (passwords at least `min_length`, the standard's policy).
    Everything is checked before anything is written (SecretError, nothing changed): the site's
    secrets exist and decrypt with this key, and no earlier rotation that needs the old value is
    still pending (a `.previous` file: its converge has not switched yet; rotating again would
    lose the only value that still opens the repository). The old value of a `keep_previous` file
    is written to `<file>.previous` before the new value replaces it. Returns one line per rotated
    file (paths, never values)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SecretError(f"{slug}: unknown kind {', '.join(unknown)} (known: {', '.join(KINDS)})")
    directory = Path(secrets_dir) / slug
    if not directory.is_dir():
        raise SecretError(f"{slug}: no secrets directory {directory}: the site was never converged, nothing to rotate")
    paths = [(k, directory / name, length) for k in kinds for name, length in KINDS[k]["files"].items()]
    with locked(directory):
        vault_key(create=True)  # a bad key file fails before anything changes
        for kind, path, _ in paths:
            if not path.exists():
                raise SecretError(f"{slug}: no {kind} secret {path}: the site was never converged, nothing to rotate")
            read_text(path)  # readable with this key, else nothing is replaced
            previous = path.with_name(path.name + PREVIOUS)
            # a .previous equal to the current value is a rotation interrupted before its new value
            # was written: nothing to switch, it is replaced below
            if path.name in KINDS[kind]["keep_previous"] and previous.exists() and value(previous) != value(path):
                raise SecretError(
                    f"{slug}: cannot rotate {kind}: the previous rotation is not applied yet ({previous} holds the "
                    f"old value the converge needs); {KINDS[kind]['how']}; nothing was rotated"
                )
        new = {path: _new_value(kind, length, min_length) for kind, path, length in paths}
        for kind, path, _ in paths:
            if path.name in KINDS[kind]["keep_previous"]:
                write(path.with_name(path.name + PREVIOUS), read_text(path))
        for path, text in new.items():
            write(path, text)
    return [f"{slug}: {k}: new value in {p}; applied by the next converge: {KINDS[k]['how']}" for k, p, _ in paths]
