"""Side effects on the host: commands, links, cgroups, mounts, sysctls. Exact names only.

Nothing here matches by prefix: every function takes the exact name of a thing the lab made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
HIERARCHIES = ("systemd", "unified")  # name=systemd (v1) for nspawn, unified (v2) for events/kill
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_WANT = 8192


class LabError(Exception):
    """A lab operation failed; the message is one line saying what and what to do."""


class LabEnvError(LabError):
    """The machine cannot run the lab as it is (not root, tools missing): exit status 2."""


def run(cmd: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 120) -> str:
    """Run a command; return stdout. On failure raise LabError with the command's last stderr line."""
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout)
    except FileNotFoundError as e:
        raise LabEnvError(
            f"{cmd[0]}: command not found; run `make setup` (it installs the lab's Debian packages)"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from e
    if check and p.returncode != 0:
        err = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise LabError(f"`{' '.join(cmd)}` failed: {err}")
    return p.stdout


def poll(what: str, test: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """Wait until test() is true; LabError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if test():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabEnvError("basisit lab needs root (containers, bridges, mounts); run it as root, e.g. with sudo")


def missing_tools(tools: Sequence[str]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


# --- links -----------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def link_master(name: str) -> str | None:
    p = Path("/sys/class/net", name, "master")
    return p.resolve().name if p.exists() else None


def ensure_bridge(name: str) -> bool:
    """Create the bridge (no address, no IPv6, up). True when it was created."""
    created = False
    if not link_exists(name):
        run(["ip", "link", "add", "name", name, "type", "bridge"])
        created = True
    # No link-local addresses: the host must not appear in a lab zone (except the operator address).
    v6 = Path("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
    if v6.exists() and v6.read_text().strip() != "1":
        v6.write_text("1")
    run(["ip", "link", "set", "dev", name, "up"])
    return created


def delete_link(name: str) -> bool:
    if not link_exists(name):
        return False
    run(["ip", "link", "delete", "dev", name], check=False)
    return True


def attach(port: str, bridge: str) -> None:
    if link_master(port) != bridge:
        run(["ip", "link", "set", "dev", port, "master", bridge])
    run(["ip", "link", "set", "dev", port, "up"])


# --- cgroups ---------------------------------------------------------------------------------


def cgroup_dir(hierarchy: str, group: str, name: str) -> Path:
    return CGROUP_ROOT / hierarchy / group / name


def check_cgroups() -> None:
    for h in HIERARCHIES:
        if not (CGROUP_ROOT / h / "cgroup.procs").exists():
            raise LabEnvError(
                f"{CGROUP_ROOT / h} is not a mounted cgroup hierarchy; the lab needs the name=systemd (v1) "
                "and unified (v2) hierarchies (see docs/lab.md)"
            )


def ensure_cgroup(group: str, name: str) -> None:
    for h in HIERARCHIES:
        cgroup_dir(h, group, name).mkdir(parents=True, exist_ok=True)


def cgroup_pids(group: str, name: str, sub: str = "") -> list[int]:
    """PIDs in a machine's cgroup (or a sub-cgroup like supervisor, payload/init.scope)."""
    d = cgroup_dir("systemd", group, name)
    f = (d / sub if sub else d) / "cgroup.procs"
    try:
        return [int(x) for x in f.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def cgroup_populated(group: str, name: str) -> bool:
    ev = cgroup_dir("unified", group, name) / "cgroup.events"
    try:
        for line in ev.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "populated":
                return v.strip() == "1"
    except FileNotFoundError:
        return False
    return False


def cgroup_kill(group: str, name: str) -> None:
    k = cgroup_dir("unified", group, name) / "cgroup.kill"
    if k.exists():
        k.write_text("1")


def remove_cgroup(group: str, name: str) -> None:
    """Remove a machine's cgroup directories depth-first in every hierarchy (must be empty)."""
    for h in HIERARCHIES:
        top = cgroup_dir(h, group, name)
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise LabError(f"cannot remove cgroup {d}: {e.strerror}; a process of {name} is still running") from e


def remove_group_if_empty(group: str) -> None:
    for h in HIERARCHIES:
        d = CGROUP_ROOT / h / group
        if d.exists() and not any(p.is_dir() for p in d.iterdir()):
            with contextlib.suppress(OSError):
                d.rmdir()


# --- mounts ----------------------------------------------------------------------------------


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == target for line in fh)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)])


def unmount(path: Path) -> None:
    if not is_mounted(path):
        return
    p = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if p.returncode != 0 and is_mounted(path):
        raise LabError(f"cannot unmount {path}: {p.stderr.strip()}")


# --- sysctl ----------------------------------------------------------------------------------


def raise_inotify_instances(want: int = INOTIFY_WANT) -> int | None:
    """Raise fs.inotify.max_user_instances to `want` when lower; return the old value if raised."""
    old = int(INOTIFY_SYSCTL.read_text().strip())
    if old >= want:
        return None
    INOTIFY_SYSCTL.write_text(str(want))
    return old
