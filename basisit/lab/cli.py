"""`basisit lab image|up|down|destroy|status` (registered by basisit.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from basisit import ipplan, sitefacts
from basisit.lab import image, lab, names, system
from basisit.lab.system import LabEnvError, LabError

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2


def _out(line: str) -> None:
    print(line, flush=True)


def _guard(func):
    """Lab errors become one line on stderr: 2 for the machine's setup or input, 1 for a failure."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (LabEnvError, names.LabNameError) as e:
            print(f"basisit lab: {e}", file=sys.stderr)
            return EXIT_INPUT
        except (LabError, sitefacts.FactsError) as e:
            print(f"basisit lab: {e}", file=sys.stderr)
            return EXIT_FAIL

    return wrapped


def _state(args: argparse.Namespace) -> Path:
    return sitefacts.state_dir(args.state).resolve()


@_guard
def cmd_image(args: argparse.Namespace) -> int:
    system.require_root()
    spec = image.load_spec(Path(args.inventory))
    img, secs = image.build(_state(args), spec, names.prefix(), progress=_out, force=args.rebuild)
    if secs is None:
        _out(f"image {img.key}: cached at {img.root} (built {img.meta.get('built')}; {spec.list_file} unchanged)")
    return EXIT_OK


@_guard
def cmd_up(args: argparse.Namespace) -> int:
    from basisit.cli import estate_of, select_sites

    estate = estate_of(args)
    slugs = select_sites(estate, args.kommune, args.wave, args.all)
    return lab.up(estate, slugs, _state(args), Path(args.inventory), _out)


@_guard
def cmd_down(args: argparse.Namespace) -> int:
    from basisit.cli import UsageError, estate_of, select_sites

    if not args.kommune and not args.all:
        raise UsageError("lab down needs --kommune SLUG (repeatable) or --all")
    if args.purge and not args.all:
        raise UsageError("--purge removes the cached image and the operator key; use it with --all")
    estate = estate_of(args)
    slugs = select_sites(estate, args.kommune, None, False)
    return lab.down(estate, slugs, args.all, args.purge, _state(args), _out)


@_guard
def cmd_status(args: argparse.Namespace) -> int:
    from basisit.cli import estate_of

    system.require_root()
    names.prefix()
    estate = estate_of(args)
    rows = lab.status(estate, _state(args))
    if not rows:
        _out("lab: nothing is up (basisit lab up --kommune SLUG brings a Kommune and zentral up)")
        return EXIT_OK
    _out(ipplan.table(rows, ["site", "host", "machine", "state", "address"]))
    return EXIT_OK


@_guard
def cmd_destroy(args: argparse.Namespace) -> int:
    from basisit.cli import UsageError, estate_of, select_sites

    estate = estate_of(args)
    select_sites(estate, [args.kommune])
    site = estate.site(args.kommune)
    h = next((h for h in site.hosts if args.host in (h.short, h.name)), None)
    if h is None:
        raise UsageError(f"{args.kommune}: no host {args.host!r} (hosts: {', '.join(x.short for x in site.hosts)})")
    lab.destroy_host(estate, args.kommune, h.name, _state(args), _out)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the local lab: sites as systemd-nspawn containers (root)")
    lsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")

    i = lsub.add_parser("image", help="build the golden image (cached by the hash of its package list)")
    i.add_argument("--rebuild", action="store_true", help="build again even when a cached image matches")
    i.set_defaults(func=cmd_image)

    u = lsub.add_parser("up", help="bring up Kommunen (and always zentral); idempotent")
    u.add_argument("--kommune", action="append", metavar="SLUG", help="a Kommune (repeatable)")
    u.add_argument("--wave", metavar="W", help="every Kommune of a rollout wave (e.g. modell)")
    u.add_argument("--all", action="store_true", help="all Kommunen")
    u.set_defaults(func=cmd_up)

    d = lsub.add_parser("down", help="stop and remove Kommunen (--all: everything the lab created)")
    d.add_argument("--kommune", action="append", metavar="SLUG", help="a Kommune (repeatable)")
    d.add_argument("--all", action="store_true", help="every site, zentral included")
    d.add_argument("--purge", action="store_true", help="with --all: also the cached image and the operator key")
    d.set_defaults(func=cmd_down)

    x = lsub.add_parser(
        "destroy",
        help="lose one host as a disaster would: stop it and throw its disk away (basisit restore rebuilds a DC)",
    )
    x.add_argument("--kommune", required=True, metavar="SLUG")
    x.add_argument("--host", required=True, metavar="NAME", help="short name (dc1) or inventory name")
    x.set_defaults(func=cmd_destroy)

    s = lsub.add_parser("status", help="sites and hosts with state and address")
    s.set_defaults(func=cmd_status)

    p.set_defaults(func=lambda args: (p.print_help(), EXIT_INPUT)[1])
