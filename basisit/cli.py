"""The `basisit` command line.

Exit status: 0 success, 1 a runtime failure (a host, a command), 2 bad input (inventory, usage).
Errors are one line each and name the file, the Kommune and the field; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from basisit import ipplan
from basisit.model import Estate
from basisit.secrets import SecretError
from basisit.validate import InventoryError, load_estate, summary

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class UsageError(Exception):
    """A wrong argument: reported in one line with exit status 2."""


def default_inventory() -> Path:
    env = os.environ.get("BASISIT_INVENTORY")
    if env:
        return Path(env)
    if Path("inventory").is_dir():
        return Path("inventory")
    return Path(__file__).resolve().parent.parent / "inventory"


def estate_of(args: argparse.Namespace) -> Estate:
    return load_estate(args.inventory)


def add_site_selection(p: argparse.ArgumentParser, what: str) -> None:
    """--kommune/--wave/--all/--zentral, the same for every command that works on realised sites."""
    p.add_argument("--kommune", action="append", metavar="SLUG", help=f"a Kommune to {what} (repeatable)")
    p.add_argument("--wave", metavar="W", help="every realised Kommune of a rollout wave")
    p.add_argument("--all", action="store_true", help="every realised Kommune, and zentral")
    p.add_argument("--zentral", action="store_true", help=f"also {what} zentral's hosts (always with --all)")


def select_sites(estate: Estate, slugs: list[str] | None, wave: str | None = None, all_: bool = False) -> list[str]:
    """Resolve --kommune/--wave/--all into slugs; unknown names are a usage error."""
    chosen: list[str] = []
    for s in slugs or []:
        if s in estate.retired:
            raise UsageError(
                f"{s} is retired (`status: retired` in {estate.sources.get(s, 'its file')}); it is not selected"
            )
        if s not in estate.kommunen:
            raise UsageError(f"unknown Kommune {s!r}; expected a slug from inventory/kommunen/ (e.g. bexbach)")
        chosen.append(s)
    if wave is not None:
        waves = [str(w) for w in estate.standard.waves]
        if str(wave) not in waves:
            raise UsageError(f"unknown wave {wave!r}; expected one of {waves}")
        chosen += [s.slug for s in estate.wave(wave)]
    if all_:
        chosen += list(estate.kommunen)
    return list(dict.fromkeys(chosen))


# --- inventory -----------------------------------------------------------------------------


def cmd_inventory_validate(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    # waivers.yaml was read as YAML by load_estate; its entries are judged against the estate here.
    try:
        from basisit.verify import waivers
    except ModuleNotFoundError:  # pragma: no cover - verify not installed
        waivers = None
    if waivers is not None:
        try:
            waivers.load(Path(args.inventory) / waivers.FILENAME, estate)
        except waivers.WaiverError as e:
            print(str(e), file=sys.stderr)
            print("inventory invalid: waivers.yaml; nothing was applied", file=sys.stderr)
            return EXIT_INPUT
    print(summary(estate))
    return EXIT_OK


def cmd_inventory_show(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    if args.slug != "zentral" and args.slug not in estate.kommunen and args.slug not in estate.retired:
        raise UsageError(f"unknown Kommune {args.slug!r}; expected a slug from inventory/kommunen/ or 'zentral'")
    site = estate.retired.get(args.slug) or estate.site(args.slug)  # a retired one is shown as it was
    if args.format == "json":
        print(json.dumps(site.to_dict(), indent=2))
        return EXIT_OK
    d = site.to_dict()
    head = [f"{site.name} ({site.slug})", f"domain {site.domain}"]
    if site.kommune:
        head.append(f"AGS {d['ags']}, {d['district']}, {d['population']} inhabitants ({d['population_date']})")
        head.append(
            f"wave {d['wave']}, size {d['size']}, net_index {d['net_index']}, block {d['block']}, NetBIOS {d['netbios']}"
        )
    print("\n".join(head) + "\n")
    print(ipplan.table([z.to_dict() for z in site.zones.values()], ["name", "cidr", "gateway", "description"]))
    print()
    hosts = [
        {
            "host": h.name,
            "roles": ",".join(h.roles),
            "address": str(h.address),
            "addresses": [f"{z}={a}" for z, a in h.addresses.items()],
            "fqdn": h.fqdn,
        }
        for h in site.hosts
    ]
    print(ipplan.table(hosts, ["host", "roles", "address", "addresses", "fqdn"]))
    return EXIT_OK


def cmd_inventory_import(args: argparse.Namespace) -> int:
    from basisit.importer import import_csv

    csv_path = Path(args.csv)
    if not csv_path.is_file():
        raise UsageError(f"{csv_path}: file not found; expected the municipality CSV (ags,name,kind,district,...)")
    written = import_csv(csv_path, Path(args.inventory))
    for p in written:
        print(f"created {p}")
    print(f"{len(written)} Kommune file(s) created; existing files untouched")
    estate = estate_of(args)
    print(summary(estate))
    return EXIT_OK


def cmd_ipplan(args: argparse.Namespace) -> int:
    estate = estate_of(args)
    slugs = None
    if args.kommune:
        slugs = select_sites(estate, args.kommune)
    print(ipplan.render(ipplan.rows(estate, slugs), args.format))
    return EXIT_OK


# --- facts ---------------------------------------------------------------------------------


def cmd_facts_import(args: argparse.Namespace) -> int:
    from basisit import sitefacts  # jsonschema: not imported by every command

    estate = estate_of(args)
    slug = args.kommune
    if slug != "zentral":
        select_sites(estate, [slug])
    path = Path(args.file)
    try:
        raw = json.loads(sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(
            f"{args.file}: cannot read JSON ({e}); expected the output of `pulumi stack output --json`"
        ) from None
    # `pulumi stack output --json` prints all outputs; the site facts are the `site_facts` output.
    doc = raw.get("site_facts", raw) if isinstance(raw, dict) else raw
    try:
        sitefacts.validate(doc, args.file)
        sitefacts.check_against_model(doc, estate.site(slug), args.file)
    except sitefacts.FactsError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INPUT
    out = sitefacts.write(sitefacts.state_dir(args.state), doc)
    print(f"{slug}: site facts of {len(doc['hosts'])} host(s) imported to {out}")
    return EXIT_OK


# --- secrets -------------------------------------------------------------------------------


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from basisit import secrets

    estate = estate_of(args)
    select_sites(estate, [args.kommune])
    kinds = [args.what] if args.what else list(secrets.KINDS)
    min_length = estate.standard.services.password_policy.min_length
    for line in secrets.rotate(_state_of(args) / "secrets", args.kommune, kinds, min_length=min_length):
        print(line)
    return EXIT_OK


def cmd_secrets_encrypt(args: argparse.Namespace) -> int:
    from basisit import secrets

    root = _state_of(args) / "secrets"
    done = [f for f in secrets.files(root) if secrets.migrate(f)]
    for f in done:
        print(f"encrypted {f}")
    print(f"{len(done)} plaintext secret file(s) encrypted under {root} with the vault key {secrets.key_file()}")
    return EXIT_OK


def _state_of(args: argparse.Namespace) -> Path:
    from basisit import sitefacts

    return sitefacts.state_dir(args.state)


# --- parser --------------------------------------------------------------------------------


INVENTORY_HELP = "inventory directory (default: ./inventory or $BASISIT_INVENTORY)"
STATE_HELP = "state directory (default: ./.basisit or $BASISIT_STATE)"


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """--inventory and --state are accepted after any (sub)command too, not only before it.

    The subcommands' copies default to SUPPRESS, so a value given before the subcommand (or
    the default) stays unless the option is repeated after it; the last one given wins.
    """
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for sp in action.choices.values():
                if id(sp) in seen:
                    continue
                seen.add(id(sp))
                have = {o for a in sp._actions for o in a.option_strings}
                if "--inventory" not in have:
                    sp.add_argument("--inventory", type=Path, default=argparse.SUPPRESS, help=INVENTORY_HELP)
                if "--state" not in have:
                    sp.add_argument("--state", default=argparse.SUPPRESS, help=STATE_HELP)
                walk(sp)

    walk(parser)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="basisit", description=__doc__.splitlines()[0])
    p.add_argument("--inventory", type=Path, default=default_inventory(), help=INVENTORY_HELP)
    p.add_argument("--state", default=None, help=STATE_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    inv = sub.add_parser("inventory", help="validate, show and extend the inventory")
    isub = inv.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    v = isub.add_parser("validate", help="validate the whole inventory; exit 2 listing every error")
    v.set_defaults(func=cmd_inventory_validate)
    s = isub.add_parser("show", help="one Kommune's derived site: zones, hosts, addresses")
    s.add_argument("slug")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_inventory_show)
    im = isub.add_parser("import", help="create Kommune files for new municipalities from the CSV")
    im.add_argument("--csv", required=True)
    im.set_defaults(func=cmd_inventory_import)

    ip = sub.add_parser("ipplan", help="the IP plan of the Land, or of some Kommunen")
    ip.add_argument("--kommune", action="append", metavar="SLUG")
    ip.add_argument("--format", choices=["table", "csv", "json"], default="table")
    ip.set_defaults(func=cmd_ipplan)

    facts = sub.add_parser("facts", help="site facts written by the lab or imported from Pulumi")
    fsub = facts.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    fi = fsub.add_parser("import", help="store a stack's site facts (pulumi stack output --json)")
    fi.add_argument("--kommune", required=True, metavar="SLUG")
    fi.add_argument("file", help="JSON file, or - for standard input")
    fi.set_defaults(func=cmd_facts_import)

    sec = sub.add_parser("secrets", help="the control host's secrets (ansible-vault encrypted; never printed)")
    ssub = sec.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    ro = ssub.add_parser("rotate", help="new value for a Kommune's secret; the next converge applies it")
    ro.add_argument("--kommune", required=True, metavar="SLUG")
    ro.add_argument("--what", choices=["restic", "probe", "ad-admin", "wireguard"], help="one kind (default: all)")
    ro.set_defaults(func=cmd_secrets_rotate)
    en = ssub.add_parser("encrypt", help="encrypt every plaintext secret file of an older state in place")
    en.set_defaults(func=cmd_secrets_encrypt)

    for register in EXTENSIONS:
        register(sub)
    _global_options_everywhere(p)
    return p


# Later parts (lab, stacks, verify, rollout) add their subcommands here.
EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def _load_extensions() -> None:
    import importlib

    EXTENSIONS.clear()  # main() may run many times in one process (tests)
    for mod in (
        "basisit.lab.cli",
        "basisit.cloud.cli",
        "basisit.verify.cli",
        "basisit.drift.cli",
        "basisit.rollout",
        "basisit.retire",
        "basisit.restore",
    ):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (e.name == mod or mod.startswith(e.name + ".")):
                continue
            raise
        EXTENSIONS.append(m.register)


CORE_COMMANDS = {"inventory", "ipplan", "facts", "secrets"}


def _command_of(argv: list[str]) -> str | None:
    """The (first-level) command in argv, skipping the global options and their values."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--inventory", "--state"):
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if _command_of(argv) in CORE_COMMANDS:
        EXTENSIONS.clear()  # `inventory validate` need not import the lab, verify, rollout, ...
    else:
        _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_INPUT
    try:
        return func(args)
    except InventoryError as e:
        print(e.report(), file=sys.stderr)
        return EXIT_INPUT
    except UsageError as e:
        print(f"basisit: {e}", file=sys.stderr)
        return EXIT_INPUT
    except SecretError as e:
        print(f"basisit: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("basisit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m basisit.cli`: run the imported module, whose UsageError the extensions raise
    from basisit.cli import main as _main

    sys.exit(_main())
