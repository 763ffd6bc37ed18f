"""`basisit verify`'s options: built once from the command line into a frozen VerifyOptions
(issue 16: the argparse Namespace was passed down and mutated); the suite's pytest command."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from basisit import cli
from basisit.verify.cli import SUITE, VerifyOptions, pytest_command


def parsed(*argv: str):
    cli._load_extensions()
    return cli.build_parser().parse_args(["verify", *argv])


def test_options_from_the_command_line():
    args = parsed("--kommune", "nalbach", "-j", "3", "--connect-timeout", "4", "--no-dashboard", "--", "-k", "ssh")
    opts = VerifyOptions.from_args(args, check_zentral=False)
    assert opts.jobs == 3 and opts.connect_timeout == 4 and not opts.dashboard and not opts.check_zentral
    assert opts.pytest_args == ("-k", "ssh")  # the "--" separating them is not passed on
    assert opts.suite == SUITE and isinstance(opts.inventory, Path)
    defaults = VerifyOptions.from_args(parsed("--all"), check_zentral=True)
    assert defaults.dashboard and defaults.check_zentral and defaults.pytest_args == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.jobs = 1  # type: ignore[misc]
    assert not hasattr(args, "check_zentral")  # the Namespace is left as parsed


def test_pytest_command(tmp_path):
    opts = VerifyOptions(tmp_path / "inv", tmp_path / "suite", jobs=1, connect_timeout=5, pytest_args=("-x",))
    cmd = pytest_command(opts, tmp_path / "raw.json")
    assert cmd[:4] == [sys.executable, "-m", "pytest", str(tmp_path / "suite")]
    assert cmd[cmd.index("--basisit-results") + 1] == str(tmp_path / "raw.json")
    assert cmd[cmd.index("-n") + 1] == "0" and cmd[-1] == "-x"  # one job: no xdist workers
    many = pytest_command(dataclasses.replace(opts, jobs=4, pytest_args=()), tmp_path / "raw.json")
    assert many[many.index("-n") + 1] == "4" and many[-1] == "4"
