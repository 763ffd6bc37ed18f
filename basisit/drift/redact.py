"""Redaction of drift records: nothing `basisit drift` writes or prints may carry a secret.

Three layers, applied to every text (task names, resources, diffs, messages):

1. tasks marked `no_log` keep only their name (the callback records nothing else);
2. every value known to be secret — the decrypted content, and each line, of every file under the
   state's secrets directory (`<state>/secrets/<slug>/…`, ansible-vault encrypted: AD passwords,
   restic passwords, WireGuard keys) — is replaced wherever it appears; a file that cannot be
   decrypted raises basisit.secrets.SecretError (drift stops rather than write unredacted);
3. what looks like a secret assignment (`password = …`, `PrivateKey = …`, `PresharedKey: …`,
   `token=…`, a PEM private key block) keeps its name and loses its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from basisit import secrets

MASK = "«redacted»"
MIN_SECRET = 6  # shorter file contents are no secrets worth masking (and would mask ordinary words)
MAX_FILE = 64 * 1024

ASSIGNMENT = re.compile(
    r"(?i)(?P<key>\b[\w.-]*(?:password|passwd|passphrase|secret|token|private[_-]?key|privatekey|presharedkey|psk)"
    r"[\w.-]*\"?\s*(?:=|:)\s*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;}\n]+)"
)
PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)


@dataclass
class Redactor:
    values: list[str] = field(default_factory=list)  # the known secret values, longest first

    @classmethod
    def from_dir(cls, path: str | Path | None) -> Redactor:
        values: set[str] = set()
        if path:
            root = Path(path)
            for f in secrets.files(root):
                try:
                    if f.stat().st_size > MAX_FILE:
                        continue
                    text = secrets.read_text(f)
                except OSError:
                    continue
                for v in (text.strip(), *text.splitlines()):
                    v = v.strip()
                    if len(v) >= MIN_SECRET:
                        values.add(v)
        # longest first: a value that contains another is masked whole
        return cls(sorted(values, key=len, reverse=True))

    def text(self, s: str) -> str:
        if not s:
            return s
        for v in self.values:
            if v in s:
                s = s.replace(v, MASK)
        s = PEM.sub(MASK, s)
        return ASSIGNMENT.sub(lambda m: m["key"] + (m["value"] if m["value"] == MASK else MASK), s)
