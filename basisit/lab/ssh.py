"""The operator's way into guests: one ed25519 key per state directory, a known_hosts file of
every host's own key, strict host key checking. The lab reaches guests only this way (never
with nsenter, which keeps the host's privileges), as the automation account (the golden image
brings it, host creation gives it the operator key), with `sudo -n` for what needs root. Nothing
logs in as root: the hosts refuse it."""

from __future__ import annotations

import base64
import shlex
import subprocess
import time
from pathlib import Path

from basisit.lab import system
from basisit.lab.system import LabError
from basisit.model import AUTOMATION_USER

USER = AUTOMATION_USER  # the lab's hosts are reached (by Ansible, verify, the lab) as this account only


def key_file(state: Path) -> Path:
    return state / "lab" / "id_ed25519"


def known_hosts_file(state: Path) -> Path:
    return state / "lab" / "known_hosts"


def ensure_key(state: Path) -> tuple[Path, str, bool]:
    """The operator key (created once, mode 0600): (private key path, public key, created?)."""
    k = key_file(state)
    created = False
    if not k.exists():
        k.parent.mkdir(parents=True, exist_ok=True)
        system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "basisit-lab-operator", "-f", str(k)])
        created = True
    k.chmod(0o600)
    return k, k.with_suffix(".pub").read_text(encoding="utf-8").strip(), created


def write_known_hosts(state: Path, entries: list[tuple[list[str], str]]) -> None:
    """entries: (names/addresses, 'ssh-ed25519 AAAA… comment')."""
    lines = sorted(f"{','.join(names)} {' '.join(key.split()[:2])}" for names, key in entries)
    p = known_hosts_file(state)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    p.chmod(0o644)


def options(state: Path) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-i",
        str(key_file(state).resolve()),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts_file(state).resolve()}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]


def common_args(state: Path) -> str:
    """What Ansible adds to its ssh command line (site facts `ssh.common_args`)."""
    return (
        f"-o IdentitiesOnly=yes -o UserKnownHostsFile={known_hosts_file(state).resolve()} -o StrictHostKeyChecking=yes"
    )


DECODE_AND_RUN = 'eval "$(printf %s "$0" | base64 -d)"'  # sh -c SCRIPT ENCODED: $0 is the encoded command


def remote_command(command: str, root: bool = True) -> str:
    """What ssh runs: `command` itself, or (root) through `sudo -n /bin/sh` (never a password prompt).

    The command travels base64-encoded as an argument: sudo logs every command line (its logfile,
    syslog, forwarded to the log host), and a lab test that looks for a marker in the logs must
    find it only where it put it. stdin stays free for `input`."""
    if not root:
        return command
    encoded = base64.b64encode(command.encode()).decode()
    return f"sudo -n /bin/sh -c {shlex.quote(DECODE_AND_RUN)} {encoded}"


def run(
    state: Path,
    address: str,
    command: str,
    input: str | None = None,
    timeout: float = 30,
    connect_timeout: int = 3,
    root: bool = True,
    user: str = USER,
) -> subprocess.CompletedProcess:
    """`command` on the guest as `user` (root: through sudo -n). `user` other than the automation
    account is for tests that show a login is refused."""
    cmd = [
        "ssh",
        *options(state),
        "-o",
        f"ConnectTimeout={connect_timeout}",
        f"{user}@{address}",
        remote_command(command, root),
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 255, "", f"ssh to {address} timed out after {timeout:.0f} s")


def check(state: Path, address: str, command: str, input: str | None = None, timeout: float = 60) -> str:
    p = run(state, address, command, input, timeout)
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise LabError(f"ssh {USER}@{address}: `{command.splitlines()[0][:60]}` failed: {err}")
    return p.stdout


def answers(state: Path, address: str) -> bool:
    return run(state, address, "true", timeout=8, connect_timeout=2, root=False).returncode == 0


def wait_ready(state: Path, address: str, timeout: float) -> float:
    """Poll `ssh <automation account>@address true` until it succeeds; seconds taken. LabError after timeout."""
    t0 = time.monotonic()
    last = ""
    while True:
        p = run(state, address, "true", timeout=8, connect_timeout=2, root=True)
        if p.returncode == 0:
            return time.monotonic() - t0
        last = (p.stderr.strip().splitlines() or [""])[-1]
        if time.monotonic() - t0 > timeout:
            raise LabError(f"{address} does not answer SSH after {timeout:.0f} s ({last or 'no answer'})")
        time.sleep(0.3)
