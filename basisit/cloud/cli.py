"""`basisit stacks config [--check]`: generate or verify every stack's Pulumi.<slug>.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from basisit.cloud import config as cloud_config
from basisit.model import Estate

EXIT_OK, EXIT_FAIL = 0, 1


def sync(estate: Estate, stacks_dir: Path, check: bool) -> tuple[list[Path], list[Path]]:
    """Write (or, with check, only compare) every stack file; returns (out of date, unknown extra files)."""
    stale: list[Path] = []
    wanted: set[Path] = set()
    for site in cloud_config.all_sites(estate):
        path = cloud_config.stack_file(site, stacks_dir)
        wanted.add(path)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        text = cloud_config.render(site, current)
        if current != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    extra = sorted(
        p for sub in ("kommune", "zentral") for p in (stacks_dir / sub).glob("Pulumi.*.yaml") if p not in wanted
    )
    return stale, extra


def cmd_stacks_config(args: argparse.Namespace) -> int:
    from basisit.validate import load_estate

    estate = load_estate(args.inventory)
    stacks_dir = Path(args.stacks_dir)
    stale, extra = sync(estate, stacks_dir, args.check)
    if args.check:
        for p in stale:
            print(f"{p}: out of date; run `basisit stacks config`", file=sys.stderr)
        for p in extra:
            print(f"{p}: no such site in the inventory; remove the stack file (and the stack)", file=sys.stderr)
        if stale or extra:
            return EXIT_FAIL
        print(f"{len(estate.kommunen) + 1} stack config file(s) up to date")
        return EXIT_OK
    for p in stale:
        print(f"wrote {p}")
    for p in extra:
        print(f"{p}: no such site in the inventory; remove the stack file (and the stack)", file=sys.stderr)
    print(f"{len(stale)} of {len(estate.kommunen) + 1} stack config file(s) written")
    return EXIT_FAIL if extra else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("stacks", help="Pulumi stacks of the Verwaltungscloud (stacks/kommune, stacks/zentral)")
    ssub = st.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    c = ssub.add_parser("config", help="generate every Pulumi.<slug>.yaml from the model (--check: verify only)")
    c.add_argument("--check", action="store_true", help="write nothing; exit 1 listing out-of-date files")
    c.add_argument("--stacks-dir", default=str(cloud_config.STACKS_DIR), help="default: the repository's stacks/")
    c.set_defaults(func=cmd_stacks_config)
