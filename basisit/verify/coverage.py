"""The control coverage table (docs/compliance-coverage.md), generated from the suite's markers.

    python -m basisit.verify.coverage          # rewrite docs/compliance-coverage.md
    python -m basisit.verify.coverage --check  # exit 1 when the file is out of date

Reads every check in tests/compliance/ (its `controls` and `feature` markers, including the
marks of `pytest.param` cases and a module's DYNAMIC_CONTROLS/DYNAMIC_FEATURES for cases
generated at run time)
and lists per catalogue which items are checked by which test, plus the catalogue items that
are not machine-checkable or deliberately not checked, with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

from basisit.verify import controls

ROOT = Path(__file__).resolve().parent.parent.parent
SUITE = ROOT / "tests" / "compliance"
DOC = ROOT / "docs" / "compliance-coverage.md"

# Catalogue items a nightly check cannot decide (organisational, physical, or outside Linux
# hosts), from reference/compliance-controls.md.
NOT_MACHINE_CHECKABLE = {
    "wiba:Organisation und Personal": "organisational (ISMS.1, ORP.1/2)",
    "wiba:Serverraum": "physical (INF.5)",
    "wiba:Arbeit innerhalb / Haustechnik": "building services (INF.1)",
    "wiba:Mobile Endgeräte": "managed by MDM, not by the stack",
    "wiba:Outsourcing und Cloud": "contracts (OPS.2.2)",
    "wiba:Drucker und Multifunktionsgeräte": "no printers in the stack (SYS.4.1)",
    "wiba:Telefonie und Fax": "not part of the stack (NET.4.x)",
    "wiba:Bürosoftware": "client office policy, no office suite in the stack",
    "gs:CON.3.A1": "backup concept: document",
    "gs:CON.3.A2": "backup procedures: document",
    "gs:CON.3.A4": "backup plans: document",
    "gs:OPS.1.1.3.A1": "patch concept: document",
    "gs:OPS.1.1.3.A2": "responsibilities: organisational",
    "gs:OPS.1.1.3.A16": "vulnerability monitoring: process",
    "gs:OPS.1.1.5.A1": "logging policy: document",
    "gs:ORP.4.A3": "documentation of accounts and rights: document",
    "gs:ORP.4.A4": "separation of duties: organisational",
    "gs:NET.3.2.A7": "emergency access: procedure",
    "gs:NET.3.2.A24": "penetration test: process",
    "gs:SYS.2.1.A1": "screen lock: the endpoints run without a desktop in the stack",
}

# Items a check could decide but that are deliberately not checked (yet), with the reason.
NOT_CHECKED = {
    "cis-deb12:1.1.2.1": "separate partitions (1.1.2.x) are decided at image build time, not per host",
    "gs:ORP.4.A10": "MFA for privileged accounts: no hardware keys in the standard yet",
    "gs:OPS.1.2.5.A3": "remote-maintenance software absence: no package allowlist in the standard yet",
    "gs:SYS.1.3.A10": "AppArmor: not enforceable inside the lab's containers (host kernel); to add for VMs",
    "gs:SYS.1.3.A3": "automount/usb-storage on servers: endpoints only (test_endpoint) until the base role does it",
}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_coverage_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


def _marks(obj) -> list:
    m = getattr(obj, "pytestmark", [])
    return m if isinstance(m, list) else [m]


def checks(suite: Path = SUITE) -> list[dict]:
    """Every check of the suite: module, function, role, features, control ids."""
    out = []
    for path in sorted(suite.glob("test_*.py")):
        mod = _load(path)
        module_marks = _marks(mod)
        role = next((m.args[0] for m in module_marks if m.name == "role"), "any")
        dynamic = getattr(mod, "DYNAMIC_CONTROLS", {})
        dynamic_features = getattr(mod, "DYNAMIC_FEATURES", {})
        for name in sorted(vars(mod)):
            func = getattr(mod, name)
            if not name.startswith("test_") or not callable(func):
                continue
            ctl: list[str] = []
            feats: list[str] = []
            for m in [*module_marks, *_marks(func)]:
                if m.name == "controls":
                    ctl += m.args
                elif m.name == "feature":
                    feats.append(m.args[0])
                elif m.name == "parametrize":
                    for p in m.args[1] if len(m.args) > 1 else []:
                        for pm in getattr(p, "marks", ()):
                            if pm.name == "controls":
                                ctl += pm.args
                            elif pm.name == "feature":
                                feats.append(pm.args[0])
            ctl += dynamic.get(name, [])
            feats += dynamic_features.get(name, [])
            out.append(
                {
                    "test_id": f"{path.stem}::{name}",
                    "role": role,
                    "features": sorted(set(feats)),
                    "controls": sorted(set(ctl)),
                    "doc": (func.__doc__ or "").strip().split("\n")[0],
                }
            )
    return out


def render(found: list[dict]) -> str:
    by_control: dict[str, list[str]] = defaultdict(list)
    for c in found:
        for ctl in c["controls"]:
            by_control[ctl].append(c["test_id"])
    lines = [
        "# Control coverage of the nightly compliance run",
        "",
        "Generated by `python -m basisit.verify.coverage` from the `controls` markers in",
        "`tests/compliance/`; do not edit (a unit test keeps it in sync). Control ids follow",
        "[reference/compliance-controls.md](../reference/compliance-controls.md). A check whose role feature has not landed yet",
        "runs as *gated* (listed in each run's report, never counted); see `docs/verify.md`.",
        "",
        "dev-sec ids inside the ranges given by the research note (sshd-14…21, 27…34, 35…43, 44…50)",
        "are numbered in the order the note lists them; confirm against ssh-baseline 2.8.1 before an audit.",
        "",
        "## Summary",
        "",
        "| Catalogue | Items checked | Checks |",
        "|---|---:|---:|",
    ]
    for prefix, (title, _) in controls.CATALOGUES.items():
        items = [k for k in by_control if k.startswith(prefix + ":")]
        n_checks = len({t for k in items for t in by_control[k]})
        lines.append(f"| {title} (`{prefix}:`) | {len(items)} | {n_checks} |")
    lines += [f"| all | {len(by_control)} | {len(found)} |", ""]
    for prefix, (title, _) in controls.CATALOGUES.items():
        items = sorted(k for k in by_control if k.startswith(prefix + ":"))
        lines += [f"## {title}", "", "| Item | Checked by |", "|---|---|"]
        for k in items:
            lines.append(f"| `{k}` | {', '.join(f'`{t}`' for t in sorted(set(by_control[k])))} |")
        lines.append("")
    lines += ["## Checks", "", "| Check | Targets (role) | Role feature | Controls |", "|---|---|---|---|"]
    for c in found:
        feats = ", ".join(c["features"]) or "–"
        lines.append(f"| `{c['test_id']}` | {c['role']} | {feats} | {' '.join(c['controls'])} |")
    lines += ["", "## Not machine-checkable", "", "| Item | Why |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(NOT_MACHINE_CHECKABLE.items())]
    lines += ["", "## Not checked (yet), with the reason", "", "| Item | Why |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(NOT_CHECKED.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m basisit.verify.coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/compliance-coverage.md is out of date")
    args = ap.parse_args(argv)
    text = render(checks())
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC}: out of date; run `python -m basisit.verify.coverage`", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
