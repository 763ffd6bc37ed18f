"""The lab's remote command wrapper (basisit.lab.ssh.remote_command), run by a local shell."""

from __future__ import annotations

import subprocess

from basisit.lab import ssh


def _run_as_ssh_would(command: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The wrapped command through bash (the account's login shell), with sudo left out."""
    wrapped = ssh.remote_command(command)
    assert wrapped.startswith("sudo -n /bin/sh -c ")
    return subprocess.run(["bash", "-c", wrapped.removeprefix("sudo -n ")], input=stdin, capture_output=True, text=True)


def test_the_command_runs_unchanged_and_stdin_stays_free():
    cmd = "set -e\nx='a b'; printf '%s|' \"$x\" \"$(cat)\"\ncat <<'EOF'\nhere $x\nEOF\nexit 3"
    p = _run_as_ssh_would(cmd, stdin="data")
    assert p.returncode == 3 and p.stdout == "a b|data|here $x\n", p


def test_the_command_line_sudo_logs_does_not_carry_the_command_text():
    marker = "forged-0123456789ab"
    wrapped = ssh.remote_command(f"grep -rlF {marker} /var/log")
    assert marker not in wrapped and "grep" not in wrapped


def test_without_root_the_command_is_sent_as_is():
    assert ssh.remote_command("true", root=False) == "true"
