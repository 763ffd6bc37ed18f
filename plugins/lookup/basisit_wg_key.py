"""Lookup `basisit_wg_key`: a site's WireGuard key pair, generated once on the control host.

    lookup('basisit_wg_key', '/state/secrets/nalbach/wireguard.key')
    -> {'private': '...', 'public': '...'}

The private key lives in that file only, ansible-vault encrypted by basisit/secrets.py (directory
0700, file 0600, written atomically, created on first use; a plaintext key file of an older state
is re-written encrypted); the public key is derived from it. Callers keep
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

from basisit import secrets as store

DOCUMENTATION = """
name: basisit_wg_key
short_description: a WireGuard key pair kept ansible-vault encrypted in a 0600 file on the control host
description:
  - Reads the private key from the file (creating it, encrypted, mode 0600, when missing) and returns it
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
    with store.locked(os.path.dirname(path) or "."):
        if not os.path.exists(path):
            store.write(path, store.wireguard_private_key())
        try:
            text = store.read_text(path).strip()
        except store.SecretError as e:
            raise AnsibleLookupError(f"WireGuard key: {e}") from None
        try:
            raw = base64.b64decode(text, validate=True)
            key = X25519PrivateKey.from_private_bytes(raw)
        except ValueError as e:
            raise AnsibleLookupError(f"{path}: not a WireGuard private key (32 bytes, base64): {e}") from None
        if not store.is_encrypted(path):
            store.write(path, text)  # a plaintext key file of an older state: the same key, encrypted
    public = key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    return {"private": text, "public": _b64(public)}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [key_pair(str(t)) for t in terms]
