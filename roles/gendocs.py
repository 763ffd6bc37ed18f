"""Render docs/roles.md from every role's meta/argument_specs.yml (so the reference cannot drift).

    .venv/bin/python roles/gendocs.py > docs/roles.md

tests/unit/test_roles.py fails when docs/roles.md differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parent


def _fmt(value: object) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`"


def render() -> str:
    out = [
        "# Role reference",
        "",
        "Generated from each role's `meta/argument_specs.yml` by `roles/gendocs.py`; do not edit by hand.",
        "Every variable carries its role's name as prefix; a toggle `<role>_<feature>_enabled` gates the",
        "task file and tag `<feature>`.",
        "",
    ]
    for spec_file in sorted(ROLES.glob("*/meta/argument_specs.yml")):
        role = spec_file.parent.parent.name
        main = yaml.safe_load(spec_file.read_text(encoding="utf-8"))["argument_specs"]["main"]
        out += [f"## {role}", "", main.get("short_description", ""), ""]
        out += ["| variable | type | default | description |", "|---|---|---|---|"]
        for name, opt in main.get("options", {}).items():
            typ = opt.get("type", "str") + (f" of {opt['elements']}" if "elements" in opt else "")
            default = _fmt(opt["default"]) if "default" in opt else "(required)"
            desc = str(opt.get("description", "")).replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {typ} | {default} | {desc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
