"""`basisit lab` refuses clearly, in one line, what it cannot do (no root, tools missing, bad input)."""

from __future__ import annotations

import pytest

from basisit.lab import system


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv", [["up", "--kommune", "nalbach"], ["down", "--all"], ["status"], ["image"]])
def test_needs_root(run, monkeypatch, tmp_path, argv):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    rc, _out, err = run("--state", tmp_path, "lab", *argv)
    assert rc == 2
    assert "needs root" in _one_line(err)


def test_missing_tools_name_make_setup(run, monkeypatch, tmp_path):
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system.shutil, "which", lambda tool: None if tool == "systemd-nspawn" else f"/usr/bin/{tool}")
    rc, _out, err = run("--state", tmp_path, "lab", "up", "--kommune", "nalbach")
    assert rc == 2
    line = _one_line(err)
    assert "systemd-nspawn" in line and "make setup" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["down"], "--kommune SLUG"),
        (["down", "--kommune", "bous", "--purge"], "--purge"),
        (["up", "--kommune", "nowhere"], "unknown Kommune"),
        (["up", "--wave", "99"], "unknown wave"),
    ],
)
def test_usage_errors(run, monkeypatch, tmp_path, argv, message):
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    rc, _out, err = run("--state", tmp_path, "lab", *argv)
    assert rc == 2
    assert message in _one_line(err)


def test_bad_prefix(run, monkeypatch, tmp_path):
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setenv("BASISIT_LAB_PREFIX", "B1")
    rc, _out, err = run("--state", tmp_path, "lab", "status")
    assert rc == 2
    assert "lab prefix" in _one_line(err)
