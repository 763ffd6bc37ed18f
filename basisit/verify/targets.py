"""Which hosts a run checks, and how it reaches them: an ssh_config generated from the site facts.

The ssh_config gives every host its own `Host` block (HostName, User, IdentityFile,
UserKnownHostsFile, Port) and, for all of them, a short ConnectTimeout and connection reuse
(ControlMaster/ControlPersist with the control sockets in the state directory). testinfra's ssh
backend runs `ssh -F <this file> <host> <command>`, so one TCP connection per host serves every
check of the run.

Transport errors are not findings. OpenSSH exits 255 for its own errors (and, rarely, when the
remote command does). `probe` and `retry_transport` try once more after a 255 or a timeout;
when the retry fails the same way and a `true` over the same connection fails too, the host is
*unreachable* (`Unreachable`, with ssh's error line), never a failed check. A 255 twice in a row
from a host that answers `true` is the remote command's own exit status.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from basisit import sitefacts
from basisit.model import Estate

CONNECT_TIMEOUT = 5  # seconds until a host that does not answer is tried again, then reported unreachable
CONTROL_PERSIST = 120  # seconds a multiplexed connection stays open after its last use
CONTEXT_ENV = "BASISIT_VERIFY_CONTEXT"
SOCKET_MAX = 107  # unix socket paths: 108 bytes with the terminating NUL
# ControlPath <dir>/%C: "/" + 40 hex digits, and while ssh creates the master it binds
# "<path>.<16 random characters>" first, so the directory may use SOCKET_MAX - 58 bytes.
SOCKET_NAME = 1 + 40 + 17


SSH_FAILED = 255  # OpenSSH's exit status for its own errors
# What ssh (not the remote command) prints when the transport fails.
SSH_ERROR = re.compile(
    r"ssh: connect to host|ssh: Could not resolve hostname|kex_exchange_identification|"
    r"Connection (refused|timed out|reset|closed)|closed by remote host|Broken pipe|No route to host|"
    r"Network is unreachable|Timeout, server .* not responding|mux_client_|ControlSocket .* already exists|"
    r"Control socket connect|banner exchange|Permission denied \(|Host key verification failed",
    re.IGNORECASE,
)


class NotRealised(Exception):
    """A selected Kommune has no site facts (it was never realised by the lab or a stack)."""


class Unreachable(Exception):
    """The host did not answer over SSH, after one retry: no check of it can be judged."""

    def __init__(self, host: str, detail: str):
        super().__init__(f"{host}: {detail}")
        self.host = host
        self.detail = detail


def ssh_error(stderr: str | bytes | None) -> str:
    """The line of ssh's stderr that names a transport failure, or ''."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    for line in (stderr or "").splitlines():
        if SSH_ERROR.search(line):
            return line.strip()
    return ""


def retry_transport(
    run: Callable[[], object],
    probe: Callable[[], bool],
    host: str,
    rc: Callable[[object], int] = lambda r: r.returncode,
    stderr: Callable[[object], str | bytes] = lambda r: r.stderr,
):
    """Run `run()`; after a transport failure (exit 255, or a timeout) run it once more.

    Returns the first result that is not a transport failure. When the retry failed too,
    `probe()` (a `true` over the same connection) decides: it fails, the host is unreachable
    (Unreachable, with ssh's error line); it succeeds, the 255 was the command's own (a check may
    run a client that exits 255 itself, e.g. an ssh from the host) and is its result.
    """
    last, result = "", None
    for _attempt in (1, 2):
        try:
            result = run()
        except subprocess.TimeoutExpired as e:
            if probe():  # the host answers: the command itself hung, a finding of the check
                raise
            last, result = f"no answer within {e.timeout:g} s", None
            continue
        if rc(result) != SSH_FAILED:
            return result
        last = ssh_error(stderr(result)) or f"ssh exited with status {SSH_FAILED} and no message"
    if result is not None and probe():  # the host answers: the command's own 255 (e.g. an ssh it ran)
        return result
    raise Unreachable(host, f"unreachable over ssh: {last} (retried once)")


def mark_unreachable(run_dir: Path, host: str, detail: str) -> None:
    """Tell the run's other pytest workers (and `basisit verify`) that `host` stopped answering."""
    d = run_dir / "unreachable"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{host}.{os.getpid()}"
    tmp.write_text(detail + "\n", encoding="utf-8")
    os.replace(tmp, d / host)


def marked_unreachable(run_dir: Path) -> dict[str, str]:
    """Hosts a worker of this run found unreachable, with the reason."""
    d = run_dir / "unreachable"
    if not d.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8").strip() for p in d.iterdir() if not p.name.startswith(".")}


@dataclass
class Host:
    name: str
    kommune: str
    roles: list[str]
    address: str  # the address ssh connects to (ansible_host)
    addresses: dict[str, str]
    ssh: dict = field(default_factory=dict)
    port: int = 22
    check: bool = True  # False: only a probe source for cross-host checks (e.g. zentral)
    reachable: bool | None = None
    error: str = ""


def verify_dir(state: Path) -> Path:
    return state / "verify"


def control_dir(state: Path) -> Path:
    """Where the control sockets live: in the state dir, or a short per-state path under /tmp when too long."""
    d = verify_dir(state).resolve() / "cm"
    if len(str(d)) + SOCKET_NAME <= SOCKET_MAX:
        return d
    digest = hashlib.sha256(str(d).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"basisit-cm-{os.getuid()}-{digest}"


def hosts_of(estate: Estate, state: Path, slugs: list[str], check_zentral: bool = False) -> list[Host]:
    """The realised hosts of the selected Kommunen, plus every other realised site's hosts as
    probe sources and destinations for cross-site checks (`check=False`).

    Raises NotRealised naming every selected Kommune without site facts, and sitefacts.FactsError
    (naming file and field) for facts that do not match the model or carry ssh options not allowed.
    """
    missing = [s for s in slugs if sitefacts.read(state, s, estate) is None]
    if missing:
        raise NotRealised(
            f"{', '.join(missing)}: not realised (no site facts in {sitefacts.facts_dir(state)}); "
            "run `basisit lab up --kommune SLUG` or import the stack's facts with `basisit facts import`"
        )
    out: list[Host] = []
    others = [s.slug for s in estate.sites if s.slug not in slugs]
    for slug in [*slugs, *others]:
        doc = sitefacts.read(state, slug, estate)  # facts are input: checked against the model
        if doc is None:
            continue
        site = estate.site(slug)
        model_hosts = {h.name: h for h in site.hosts}
        for name, h in sorted(doc["hosts"].items()):
            mh = model_hosts.get(name)
            out.append(
                Host(
                    name=name,
                    kommune=slug,
                    roles=list(mh.roles if mh else h["roles"]),
                    address=h["ansible_host"],
                    addresses=dict(h.get("addresses", {})),
                    ssh=dict(doc.get("ssh", {})),
                    port=int(h.get("ansible_port", 22)),
                    check=slug in slugs or (slug == "zentral" and check_zentral),
                )
            )
    return out


class SelectionError(Exception):
    """`--hosts` names no host, another scheme than ansible://, or an inventory Ansible cannot read."""


HOSTS_SCHEME = "ansible://"


def ansible_inventory(source: Path, state: Path, ansible_config: Path | None = None) -> dict:
    """`ansible-inventory --list` of `source` (the basisit inventory plugin, with the site facts
    of `state`), run from this Python's bin directory as testinfra's ansible backend runs it."""
    env = {**os.environ, "BASISIT_STATE": str(state), "ANSIBLE_VERBOSITY": "0"}
    if ansible_config is not None and "ANSIBLE_CONFIG" not in os.environ:
        env["ANSIBLE_CONFIG"] = str(ansible_config)
    cmd = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(source), "--list"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise SelectionError(f"ansible-inventory -i {source} failed:\n{p.stderr.strip()}")
    return json.loads(p.stdout)


def _group_hosts(inventory: dict, group: str, seen: set[str]) -> set[str]:
    if group in seen:
        return set()
    seen.add(group)
    g = inventory.get(group, {})
    out = set(g.get("hosts", []))
    for child in g.get("children", []):
        out |= _group_hosts(inventory, child, seen)
    return out


def match_hosts(inventory: dict, pattern: str) -> set[str]:
    """The hosts an `ansible://PATTERN` names, as testinfra's AnsibleRunner.get_hosts matches:
    every host of each group whose name matches the glob (children included), and every host
    whose name matches it."""
    out: set[str] = set()
    for group, data in inventory.items():
        if group == "_meta":
            continue
        if fnmatch.fnmatch(group, pattern):
            out |= _group_hosts(inventory, group, set())
        out |= {h for h in data.get("hosts", []) if fnmatch.fnmatch(h, pattern)}
    return out


def select_hosts(specs: str, inventory: dict) -> list[str]:
    """The host names of testinfra's `--hosts` (comma-separated `ansible://PATTERN`s)."""
    names: set[str] = set()
    for spec in (s.strip() for s in specs.split(",")):
        if not spec.startswith(HOSTS_SCHEME):
            raise SelectionError(
                f"--hosts {spec!r}: expected ansible://PATTERN (a group such as a Kommune slug, wave_modell, "
                "ad_dc, or a host name; globs allowed); the connection is the ssh_config basisit writes from "
                "the site facts, so other schemes (ssh://, local://, ...) are not used"
            )
        pattern = spec.removeprefix(HOSTS_SCHEME) or "all"
        found = match_hosts(inventory, pattern)
        if not found:
            raise SelectionError(f"--hosts {spec!r}: no group or host of the inventory matches {pattern!r}")
        names |= found
    return sorted(names)


def selected_hosts(estate: Estate, state: Path, names: list[str]) -> list[Host]:
    """`hosts_of` for the realised sites of `names`: those of their hosts the site facts list are
    checked, every other realised host is a probe source or destination only (`check=False`).
    Raises SelectionError for a name that is not a host of the model."""
    site_of = {h.name: s.slug for s in estate.sites for h in s.hosts}
    unknown = [n for n in names if n not in site_of]
    if unknown:
        raise SelectionError(f"--hosts: {', '.join(unknown)}: not hosts of the basisit model")
    sites = sorted({site_of[n] for n in names})
    hosts = hosts_of(estate, state, [s for s in sites if sitefacts.read(state, s, estate) is not None])
    wanted = set(names)
    for h in hosts:
        h.check = h.name in wanted
    return hosts


def _common_options(args: str) -> list[tuple[str, str]]:
    """`-o Key=Value` pairs of an Ansible ssh common_args string."""
    words = shlex.split(args or "")
    out = []
    for i, w in enumerate(words):
        opt = None
        if w == "-o" and i + 1 < len(words):
            opt = words[i + 1]
        elif w.startswith("-o") and len(w) > 2:
            opt = w[2:]
        if opt and "=" in opt:
            k, v = opt.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


def ssh_config(hosts: list[Host], state: Path, connect_timeout: int = CONNECT_TIMEOUT) -> str:
    """The text of the run's ssh_config."""
    lines = ["# Generated by `basisit verify` from the site facts; rewritten on every run.", ""]
    for h in hosts:
        ssh = h.ssh
        lines.append(f"Host {h.name}")
        lines.append(f"    HostName {h.address}")
        lines.append(f"    Port {h.port}")
        if ssh.get("user"):
            lines.append(f"    User {ssh['user']}")
        if ssh.get("private_key_file"):
            lines.append(f"    IdentityFile {ssh['private_key_file']}")
            lines.append("    IdentitiesOnly yes")
        if ssh.get("known_hosts_file"):
            lines.append(f"    UserKnownHostsFile {ssh['known_hosts_file']}")
            lines.append("    StrictHostKeyChecking yes")
        seen = {"hostname", "port", "user", "identityfile", "identitiesonly", "userknownhostsfile"}
        seen |= {"stricthostkeychecking"} if ssh.get("known_hosts_file") else set()
        for k, v in _common_options(ssh.get("common_args", "")):
            if k.lower() not in seen and k.lower() not in {"connecttimeout", "controlmaster", "controlpath"}:
                seen.add(k.lower())
                lines.append(f"    {k} {v}")
        lines.append("")
    lines += [
        "Host *",
        "    BatchMode yes",
        f"    ConnectTimeout {connect_timeout}",
        "    ConnectionAttempts 1",
        "    ServerAliveInterval 5",
        "    ServerAliveCountMax 3",
        "    ControlMaster auto",
        f"    ControlPath {control_dir(state)}/%C",
        f"    ControlPersist {CONTROL_PERSIST}",
        "    LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def write_ssh_config(hosts: list[Host], state: Path, connect_timeout: int = CONNECT_TIMEOUT) -> Path:
    d = verify_dir(state)
    d.mkdir(parents=True, exist_ok=True)
    cd = control_dir(state)
    cd.mkdir(parents=True, exist_ok=True, mode=0o700)
    p = d / "ssh_config"
    # Atomically: a verify running at the same time reads this file for every ssh it starts.
    tmp = d / f".ssh_config.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(ssh_config(hosts, state, connect_timeout))
    os.replace(tmp, p)
    return p


@contextmanager
def run_lock(state: Path) -> Iterator[Callable[[], bool]]:
    """Held (shared) for the whole of a verify run on this state directory. Yields `alone()`, for
    the end of the run: True when no other run holds it (only then may this run close the shared
    master connections; a run at the same time still uses them). flock converts the lock
    non-atomically, so `alone()` is asked once, when the run no longer needs the connections."""
    d = verify_dir(state)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)

        def alone() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        yield alone
    finally:
        os.close(fd)


def ssh_true(name: str, config: Path, connect_timeout: int = CONNECT_TIMEOUT) -> subprocess.CompletedProcess:
    """`ssh -F config name true`: opens (or reuses) the host's master connection."""
    cmd = ["ssh", "-F", str(config), name, "true"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=connect_timeout + 10, stdin=subprocess.DEVNULL)


def probe(host: Host, config: Path, connect_timeout: int = CONNECT_TIMEOUT) -> Host:
    """Open the host's master connection (`ssh true`, retried once); record whether it answered in time.

    A probe that does not exit 0 twice (ssh's error, a refused login, no answer) makes the host
    unreachable: its checks are reported `unreachable`, not failed and not passed.
    """
    last = ""
    for _attempt in (1, 2):
        try:
            p = ssh_true(host.name, config, connect_timeout)
        except subprocess.TimeoutExpired:
            last = f"no answer within {connect_timeout + 10} s"
            continue
        if p.returncode == 0:
            host.reachable, host.error = True, ""
            return host
        last = ssh_error(p.stderr) or (p.stderr.strip().splitlines() or [f"ssh exited with status {p.returncode}"])[-1]
    host.reachable = False
    host.error = f"unreachable over ssh at {host.address}: {last} (retried once)"
    return host


def probe_all(hosts: list[Host], config: Path, jobs: int = 16, connect_timeout: int = CONNECT_TIMEOUT) -> list[Host]:
    if not hosts:
        return hosts
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(hosts)))) as pool:
        list(pool.map(lambda h: probe(h, config, connect_timeout), hosts))
    return hosts


def write_context(path: Path, hosts: list[Host], config: Path, kommunen: list[str], inventory: Path) -> Path:
    """What the pytest process needs: targets, ssh_config, selection (read by tests/compliance/conftest.py)."""
    doc = {
        "ssh_config": str(config.resolve()),
        "kommunen": kommunen,
        "inventory": str(Path(inventory).resolve()),
        "hosts": [asdict(h) for h in hosts],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def stop_masters(hosts: list[Host], config: Path) -> None:
    """Close the multiplexed connections the run opened."""
    for h in hosts:
        subprocess.run(
            ["ssh", "-F", str(config), "-O", "exit", h.name],
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )
