"""Lookup `basisit_wg_key`: a site's WireGuard key pair, generated once on the control host.

    lookup('basisit_wg_key', '/state/secrets/nalbach/wireguard.key')
    -> {'private': '...', 'public': '...'}

The private key lives in that file only (directory 0700, file 0600, created on first use, like
ansible.builtin.password does for passwords); the public key is derived from it. Callers keep
the private key out of logs (`no_log`). X25519 keys in WireGuard's base64 encoding, made with
`cryptography` (a dependency of ansible-core), so the control host needs no wireguard-tools.
"""

from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

DOCUMENTATION = """
name: basisit_wg_key
short_description: a WireGuard key pair kept in a 0600 file on the control host
description:
  - Reads the private key from the file (creating it, mode 0600, when missing) and returns it
    with its public key.
options:
  _terms:
    description: path of the private key file
    required: true
"""

RAW = serialization.Encoding.Raw


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def key_pair(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        raw = X25519PrivateKey.generate().private_bytes(
            RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_b64(raw) + "\n")
    with open(path, encoding="ascii") as fh:
        text = fh.read().strip()
    try:
        raw = base64.b64decode(text, validate=True)
        key = X25519PrivateKey.from_private_bytes(raw)
    except ValueError as e:
        raise AnsibleLookupError(f"{path}: not a WireGuard private key (32 bytes, base64): {e}") from None
    public = key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    return {"private": text, "public": _b64(public)}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [key_pair(str(t)) for t in terms]
