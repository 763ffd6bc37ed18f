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


def wireguard_private_key() -> str:
    """A new X25519 private key in WireGuard's base64 encoding."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


# --- rotation --------------------------------------------------------------------------------

# What each kind's next converge does with a new value (roles/*/tasks), and so whether it can be
# rotated. A kind whose value the roles only set at creation is refused: a new value on the
# control host alone would lock the site out (joins, verify, backups would use a value the
# site never got).
KINDS: dict[str, dict] = {
    "wireguard": {
        "files": ["wireguard.key"],
        "applied": True,
        "generate": wireguard_private_key,  # the roles need no old value: none is kept
        "how": (
            "the site gateway's wg0.conf (roles/gateway) and the hub's peer entry (roles/vpn_hub) are "
            "templated from the key on every converge and reloaded: converge the Kommune and zentral "
            "together (`-l SLUG,zentral`); the tunnel is down between the two plays"
        ),
    },
    "restic": {
        "files": ["restic-repository", "restic-rest"],
        "applied": False,
        "how": (
            "the repository password is only used by `restic init` (roles/backup_client): the roles have no "
            "`restic key add` with the old password and `restic key remove` afterwards, so a new value "
            "would lock the Kommune out of its own backups"
        ),
    },
    "probe": {
        "files": ["probe.secret"],
        "applied": False,
        "how": (
            "roles/ad_dc sets the probe account's password only when it creates the account "
            "(tasks/probe.yml), never on a later converge: `basisit verify` would fail to authenticate"
        ),
    },
    "ad-admin": {
        "files": ["ad-administrator"],
        "applied": False,
        "how": (
            "roles/ad_dc sets the Administrator password only at provisioning (tasks/provision.yml); "
            "joins, KCC and DNS tasks would then authenticate with a password the domain never got"
        ),
    },
}


def rotate(secrets_dir: str | Path, slug: str, kinds: list[str]) -> list[str]:
    """Give each kind of `slug` a new value; refuse (SecretError, nothing changed) any kind the
    roles cannot apply. Returns one line per rotated file (paths, never values)."""
    refused = [k for k in kinds if not KINDS[k]["applied"]]
    if refused:
        raise SecretError(
            "\n".join(f"{slug}: cannot rotate {k}: {KINDS[k]['how']}" for k in refused)
            + f"\nnothing was rotated; rotatable today: {', '.join(k for k in KINDS if KINDS[k]['applied'])}"
        )
    directory = Path(secrets_dir) / slug
    if not directory.is_dir():
        raise SecretError(f"{slug}: no secrets directory {directory}: the site was never converged, nothing to rotate")
    paths = [(k, directory / name) for k in kinds for name in KINDS[k]["files"]]
    with locked(directory):
        vault_key(create=True)  # a bad key file fails before anything changes
        for kind, path in paths:
            if not path.exists():
                raise SecretError(f"{slug}: no {kind} secret {path}: the site was never converged, nothing to rotate")
            read_text(path)  # readable with this key, else nothing is replaced
        for kind, path in paths:
            write(path, KINDS[kind]["generate"]())
    return [f"{slug}: {k}: new value in {p}; applied by the next converge: {KINDS[k]['how']}" for k, p in paths]
