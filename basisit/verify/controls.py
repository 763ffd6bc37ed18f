"""Control identifiers of the four catalogues and how they group into families.

See reference/compliance-controls.md: BSI IT-Grundschutz (`gs:SYS.1.3.A8`), WiBA by
checklist name (`wiba:Serversysteme`), CIS Debian 12 (`cis-deb12:5.1.20`), dev-sec baselines
(`devsec:sshd-27`).
"""

from __future__ import annotations

import re

CATALOGUES = {
    "gs": ("BSI IT-Grundschutz", re.compile(r"^[A-Z]{3,4}(\.\d+)+\.A\d+$")),
    "wiba": ("BSI WiBA (checklist)", re.compile(r"^[A-ZÄÖÜ][\w äöüÄÖÜß/-]+(#\d+)?$")),
    "cis-deb12": ("CIS Debian Linux 12 v1.1.0", re.compile(r"^\d+(\.\d+)+$")),
    "devsec": ("dev-sec baselines", re.compile(r"^(os|package|sysctl|sshd|ssh)-\d+[a-z]?$")),
}
TEST_ID = re.compile(r"^test_\w+::test_\w+(\[.*\])?$")


def problem(control: str) -> str | None:
    """None when `control` is a well-formed control id, else what is wrong with it."""
    prefix, sep, rest = control.partition(":")
    if not sep or prefix not in CATALOGUES:
        return f"{control!r} has no catalogue prefix; expected one of {', '.join(p + ':' for p in CATALOGUES)}"
    if not CATALOGUES[prefix][1].match(rest):
        examples = {"gs": "gs:SYS.1.3.A8", "wiba": "wiba:Serversysteme", "cis-deb12": "cis-deb12:5.1.20"}
        return f"{control!r} is not a valid {CATALOGUES[prefix][0]} id (e.g. {examples.get(prefix, 'devsec:sshd-27')})"
    return None


def family(control: str) -> str:
    """The family a control belongs to: gs:SYS.1.3.A8 -> SYS.1.3; cis-deb12:5.1.20 -> CIS 5.1."""
    prefix, _, rest = control.partition(":")
    if prefix == "gs":
        return rest.rsplit(".A", 1)[0]
    if prefix == "cis-deb12":
        return "CIS " + ".".join(rest.split(".")[:2])
    if prefix == "devsec":
        return "dev-sec " + rest.split("-")[0]
    if prefix == "wiba":
        return "WiBA " + rest.split("#")[0]
    return control
