"""Lookup `basisit_secret`: a generated secret that satisfies its policy by construction.

    lookup('basisit_secret', '/state/secrets/nalbach/ad-administrator',
           min_length=12, length=24, replace_invalid=true, what='AD Administrator password')
    -> 'k7.Qz...'

The secret lives in that file only, ansible-vault encrypted by basisit/secrets.py (directory
0700, file 0600, written atomically, created on first use; a plaintext file of an older state is
re-written encrypted); callers keep it out of logs. Every generated secret holds at least one
upper-case letter, one lower-case letter, one digit and one symbol of SYMBOLS, starts with a
letter or digit, and is max(length, min_length) long (min_length is the standard's password
policy). SYMBOLS are safe for every consumer: samba-tool (complexity), restic's REST URL (RFC 3986 unreserved, so no
escaping in `rest:http://user:password@host`), htpasswd, systemd environment files and a shell
word without quoting.

A stored secret that violates the policy (a file written by ansible.builtin.password before,
which drew 24 characters from letters, digits and `.,-_` and so could lack a class) is
regenerated when the caller says it can never have been applied (`replace_invalid`: e.g. the
AD Administrator password of a domain not yet provisioned), with a warning naming the file and
the rule it broke, never the value. Otherwise it is kept, since it may be in use, and the warning
says so. Concurrent callers (one per host of a Kommune) take a lock on the directory, so all of
them read the same value.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from basisit import secrets as store
from basisit.secrets import ALPHABET, CLASSES, DIGITS, LOWER, SYMBOLS, UPPER  # noqa: F401 - used by callers too

DOCUMENTATION = """
name: basisit_secret
short_description: a generated secret that satisfies its policy, kept ansible-vault encrypted in a 0600 file
description:
  - Reads the secret from the file (creating it, encrypted, mode 0600, when missing). A generated secret
    holds an upper-case letter, a lower-case letter, a digit and a symbol of C(-._), starts
    with a letter or digit and is max(length, min_length) characters long.
options:
  _terms:
    description: path of the secret file
    required: true
  length:
    description: length of a generated secret
    type: int
    default: 24
  min_length:
    description: the policy's minimum length (the standard's password policy)
    type: int
    default: 12
  replace_invalid:
    description: regenerate a stored secret that violates the policy (it can never have been applied)
    type: bool
    default: false
  must_exist:
    description: fail, naming the file, when it is missing instead of generating (a reader of another role's secret)
    type: bool
    default: false
  what:
    description: what the secret is for, named in warnings and errors (never the value)
    type: str
    default: secret
"""

display = Display()


def generate(length: int) -> str:
    """A secret of `length` characters with every class of CLASSES, first character alphanumeric
    (basisit/secrets.py's, which `basisit secrets rotate` uses too)."""
    return store.password(length)


def violations(secret: str, min_length: int) -> list[str]:
    """The rules of the policy the secret breaks, in words (never the value)."""
    found = []
    if len(secret) < min_length:
        found.append(f"shorter than {min_length} characters")
    found += [f"no {name}" for name, chars in CLASSES if not set(secret) & set(chars)]
    if set(secret) - set(ALPHABET):
        found.append(f"characters outside letters, digits and {SYMBOLS}")
    if secret[:1] in SYMBOLS:
        found.append("starts with a symbol")
    return found


def secret(
    path: str,
    length: int = 24,
    min_length: int = 12,
    replace_invalid: bool = False,
    what: str = "secret",
    must_exist: bool = False,
) -> str:
    length = max(int(length), int(min_length))
    with store.locked(os.path.dirname(path) or "."):
        if not os.path.exists(path):
            if must_exist:
                raise AnsibleLookupError(f"{what}: no secret {path} (the role that creates it has not run)")
            value = generate(length)
            store.write(path, value)
            return value
        try:
            value = store.value(path)
        except store.SecretError as e:
            raise AnsibleLookupError(f"{what}: {e}") from None
        broken = violations(value, min_length)
        if broken and replace_invalid:
            display.warning(
                f"{what} in {path} violates its policy ({'; '.join(broken)}) and was never applied: regenerated"
            )
            value = generate(length)
            store.write(path, value)
            return value
        if broken:
            display.warning(f"{what} in {path} violates its policy ({'; '.join(broken)}); kept (it may be in use)")
        if not store.is_encrypted(path):
            store.write(path, value)  # a plaintext file of an older state: the same value, encrypted
        os.chmod(path, 0o600)
        return value


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        opts = {k: self.get_option(k) for k in ("length", "min_length", "replace_invalid", "what", "must_exist")}
        try:
            return [secret(str(t), **opts) for t in terms]
        except (ValueError, store.SecretError) as e:
            raise AnsibleLookupError(f"{opts['what']}: {e}") from None
