"""Lookup `basisit_admin_password`: a named admin's local password, as the crypt hash a host stores.

    lookup('basisit_admin_password', '/state/secrets/_admins/ops-ego',
           salt=inventory_hostname ~ ':ops-ego', min_length=12, rounds=65536)
    -> '$6$rounds=65536$<16 chars>$<86 chars>'

The password itself is one per admin for the whole estate, generated and kept exactly like every
other control-host secret (lookup `basisit_secret`: every character class of the policy, length
max(length, min_length), ansible-vault encrypted, file 0600, created on first use under a lock so
concurrent hosts read one value). The lookup returns only its SHA-512 crypt hash (basisit.pwhash):
the plaintext never becomes a play variable. The salt is derived from `salt` (the host and the
admin's name), so the same password gives the same hash on the next converge (the user module
reports no change) and a different one on every host. An operator reads the password with
`ansible-vault view` (docs/design.md, "State and secrets").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from basisit import pwhash
from basisit import secrets as store

DOCUMENTATION = """
name: basisit_admin_password
short_description: the SHA-512 crypt hash of a named admin's generated password, kept ansible-vault encrypted
description:
  - Reads the admin's password from the file (creating it as lookup basisit_secret does, encrypted, mode
    0600, when missing) and returns its SHA-512 crypt hash with a salt derived from C(salt), never the
    password.
options:
  _terms:
    description: path of the password file
    required: true
  salt:
    description: what the salt is derived from (the host and the admin's name); not the password
    type: str
    required: true
  length:
    description: length of a generated password
    type: int
    default: 24
  min_length:
    description: the policy's minimum length (the standard's password policy)
    type: int
    default: 12
  rounds:
    description: SHA-512 crypt rounds
    type: int
    default: 65536
  what:
    description: what the password is for, named in warnings and errors (never the value)
    type: str
    default: admin password
"""

_spec = importlib.util.spec_from_file_location("_basisit_secret_lookup", Path(__file__).with_name("basisit_secret.py"))
_secret_lookup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_secret_lookup)


def password_hash(
    path: str, salt: str, length: int = 24, min_length: int = 12, rounds: int = 65536, what: str = "admin password"
) -> str:
    """The crypt hash of the password in `path` (generated there when missing)."""
    password = _secret_lookup.secret(str(path), length=length, min_length=min_length, what=what)
    return pwhash.sha512_crypt(password, pwhash.salt_for(salt), rounds)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        opts = {k: self.get_option(k) for k in ("salt", "length", "min_length", "rounds", "what")}
        try:
            return [password_hash(str(t), **opts) for t in terms]
        except (ValueError, store.SecretError) as e:
            raise AnsibleLookupError(f"{opts['what']}: {e}") from None
