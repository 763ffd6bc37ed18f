"""Shared machinery of compliance suites (imported by tests/compliance/conftest.py).

- `context()`: the run context `basisit verify` wrote (targets, ssh_config, probe results); a
  direct `pytest tests/compliance` run builds it from the default state directory instead;
- `pytest_generate_tests`: parametrises a check's `target` argument with the hosts of the
  module's role (`pytestmark = pytest.mark.role("gateway")`, `any` = every host);
- `host` fixture / `connect(name)`: the testinfra host (ssh backend through the generated
  ssh_config, connection reuse). Every command goes through `targets.retry_transport`: a
  transport error (ssh's exit 255, a timeout) is retried once and, if it persists, raises
  `targets.Unreachable`, which the plugin reports as state `unreachable` (never failed, never
  skipped); the host is then marked unreachable for the run's other workers;
- `reachable` (autouse): a check whose target the probe (or a worker) found unreachable is
  reported unreachable at once, without running;
- verify never reads private keys: a command that would (`wg show … dump|private-key`,
  `wg showconf`, `cat` of a key file or of /etc/wireguard/) is refused before it runs
  (`reads_private_key`), and a unit test keeps such commands out of tests/compliance;
- `gate(items, landed)`: checks whose role feature has not landed are skipped as "gated:";
- helpers reading effective state: `sshd_effective`, `tcp_probe`, `udp_dns_probe`;
- `secret(kommune, name)` and `run_with_secret`: a credential from the state directory, handed
  to a real client on its stdin (never an argument, never in a report).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import testinfra
import yaml

from basisit.validate import load_estate
from basisit.verify import plugin
from basisit.verify import targets as tg

ROOT = Path(__file__).resolve().parent.parent.parent

__all__ = ["host", "pytest_generate_tests", "reachable"]


def not_applicable(reason: str) -> None:
    pytest.skip(f"not applicable: {reason}")


def feature_landed(feature: str, landed: set[str], roles_dir: Path = ROOT / "roles") -> bool:
    """A feature (role/taskfile) is enabled when listed in `landed` and its task file exists."""
    role, _, task = feature.partition("/")
    path = roles_dir / role / "tasks" / f"{task or 'main'}.yml"
    return feature in landed and path.is_file()


@dataclass(frozen=True)
class Target:
    """A host under check (what `target` is parametrised with)."""

    name: str
    kommune: str
    roles: tuple[str, ...]
    address: str
    addresses: tuple[tuple[str, str], ...]
    reachable: bool | None
    error: str

    def addr(self, zone: str) -> str:
        return dict(self.addresses)[zone]

    @property
    def addresses_ip(self) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Address(a) for _, a in self.addresses]


@cache
def context() -> dict:
    env = os.environ.get(tg.CONTEXT_ENV)
    if env:
        return json.loads(Path(env).read_text(encoding="utf-8"))
    # Direct pytest run: every realised Kommune of the default state directory.
    from basisit import sitefacts

    inv = Path(os.environ.get("BASISIT_INVENTORY", ROOT / "inventory"))
    state = sitefacts.state_dir(None)
    estate = load_estate(inv)
    slugs = [s for s in estate.kommunen if sitefacts.read(state, s, estate) is not None]
    hosts = tg.hosts_of(estate, state, slugs)
    cfg = tg.write_ssh_config(hosts, state)
    return {
        "ssh_config": str(cfg.resolve()),
        "kommunen": slugs,
        "inventory": str(inv),
        "hosts": [h.__dict__ for h in hosts],
    }


@cache
def estate():
    return load_estate(context()["inventory"])


def all_targets(include_helpers: bool = False) -> list[Target]:
    return [
        Target(
            name=h["name"],
            kommune=h["kommune"],
            roles=tuple(h["roles"]),
            address=h["address"],
            addresses=tuple(sorted(h["addresses"].items())),
            reachable=h.get("reachable"),
            error=h.get("error", ""),
        )
        for h in context()["hosts"]
        if h.get("check", True) or include_helpers
    ]


def targets_for(role: str) -> list[Target]:
    return [t for t in all_targets() if role == "any" or role in t.roles]


def by_name(name: str) -> Target | None:
    return next((t for t in all_targets(include_helpers=True) if t.name == name), None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    m = metafunc.definition.get_closest_marker("role")
    role = m.args[0] if m else "any"
    ts = targets_for(role)
    metafunc.parametrize("target", ts, ids=[t.name for t in ts], scope="module")


UNGATE_ENV = "BASISIT_VERIFY_UNGATE"  # =1: run gated checks too (to try them against a converged lab)


def gate(items: list[pytest.Item], landed: set[str], roles_dir: Path = ROOT / "roles") -> None:
    """Skip as "gated:" every check whose role feature has not landed (see feature_landed)."""
    if os.environ.get(UNGATE_ENV) == "1":
        return
    for item in items:
        for m in item.iter_markers("feature"):
            if not feature_landed(m.args[0], landed, roles_dir):
                item.add_marker(pytest.mark.skip(reason=f"{plugin.GATED_PREFIX} role feature {m.args[0]} not landed"))
                break


# Commands that print private key material: WireGuard's dump/private-key/showconf, and file
# readers pointed at key files (testinfra's File.content is `cat -- PATH`).
PRIVATE_KEY_READ = re.compile(
    r"\bwg\s+(show\b[^;|&]*\b(dump|private-key|preshared-keys)\b|showconf\b)"
    r"|\b(cat|head|tail|less|more|base64|xxd|od|strings|grep|sed|awk|cp|dd|tar)\b[^;|&]*"
    r"(/etc/wireguard/|ssh_host_\w+_key(?!\.pub)\b|\bid_(rsa|ecdsa|ed25519)(?!\.pub)\b|private[_-]?key|\.key\b"
    r"|/etc/ssl/private/)",
    re.IGNORECASE,
)


def reads_private_key(command: str) -> str:
    """The part of `command` that would read private key material, or ''."""
    m = PRIVATE_KEY_READ.search(command)
    return m.group(0) if m else ""


def _refuse_key_reads(command: str) -> None:
    if found := reads_private_key(command):
        pytest.fail(f"refused: {command!r} would read a private key ({found!r}); verify never reads private keys")


_hosts: dict[str, testinfra.host.Host] = {}
_down: dict[str, str] = {}  # hosts found unreachable in this process (a direct pytest run has no run dir)


def _run_dir() -> Path | None:
    env = os.environ.get(tg.CONTEXT_ENV)
    return Path(env).parent if env else None


def unreachable_reason(name: str) -> str:
    """Why `name` is unreachable in this run ('' when it is not known to be)."""
    t = by_name(name)
    if t is not None and t.reachable is False:
        return t.error
    if name in _down:
        return _down[name]
    rd = _run_dir()
    if rd is not None:
        return tg.marked_unreachable(rd).get(name, "")
    return ""


def _mark_down(e: tg.Unreachable) -> None:
    _down[e.host] = str(e)
    rd = _run_dir()
    if rd is not None:
        tg.mark_unreachable(rd, e.host, str(e))


def _probe(name: str) -> bool:
    """A cheap `true` over the host's connection: does it answer at all?"""
    try:
        return tg.ssh_true(name, Path(context()["ssh_config"])).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _transport_aware(name: str, h: testinfra.host.Host) -> testinfra.host.Host:
    """Record every command a check runs on h (testinfra's modules call h.run too), and run it
    through `retry_transport`: testinfra's own 255 handling (a RuntimeError, i.e. a failed
    check) never sees a transport error."""
    orig = h.run
    backend = h.backend

    def run(command, *args, **kwargs):
        cmd = backend.get_command(command, *args)
        _refuse_key_reads(cmd)  # before it is recorded: a refused command is no reproduce hint
        plugin.record_command(cmd)
        return orig(command, *args, **kwargs)

    def run_ssh(command: str):
        _refuse_key_reads(command)
        if reason := unreachable_reason(name):
            raise tg.Unreachable(name, reason.removeprefix(f"{name}: "))
        cmd, cmd_args = backend._build_ssh_command(command)

        def once():
            out = backend.run_local(" ".join(cmd), *cmd_args)
            out.command = backend.encode(command)
            return out

        try:
            return tg.retry_transport(once, lambda: _probe(name), name, rc=lambda r: r.rc, stderr=lambda r: r.stderr)
        except tg.Unreachable as e:
            _mark_down(e)
            raise

    h.run = run
    backend.run_ssh = run_ssh
    return h


def login_user(name: str) -> str:
    """The account the run logs in to host `name` as (the site facts' ssh user; '' when unset)."""
    return next((h.get("ssh", {}).get("user", "") for h in context()["hosts"] if h["name"] == name), "")


def connect(name: str):
    """The testinfra host for `name`; raises targets.Unreachable at once for a host known unreachable."""
    if reason := unreachable_reason(name):
        raise tg.Unreachable(name, reason.removeprefix(f"{name}: "))
    if name not in _hosts:
        cfg = context()["ssh_config"]
        # Checks read what only root may (sshd -T, /etc/shadow, nft): a login account the facts
        # name other than root (the automation account) runs them through `sudo -n`, which fails
        # at once instead of prompting.
        user = login_user(name)
        h = testinfra.get_host(
            f"ssh://{name}",
            ssh_config=cfg,
            timeout=tg.CONNECT_TIMEOUT,
            controlpersist=tg.CONTROL_PERSIST,
            sudo=bool(user) and user != "root",
        )
        h.backend.get_sudo_command = lambda command, _user, b=h.backend: b.quote("sudo -n /bin/sh -c %s", command)
        _hosts[name] = _transport_aware(name, h)
    return _hosts[name]


def run_with_secret(
    name: str, command: str, secret: str, timeout: float = 60, root: bool = False
) -> subprocess.CompletedProcess:
    """Run `command` on host `name` with `secret` on its stdin: never an argument, never recorded.

    Same ssh_config (and master connection) as the testinfra hosts, same transport retry; the
    report's reproduce line names the command and says where its stdin comes from. `root`: the
    command needs root (reads what only root may); a login account other than root runs it
    through `sudo -n` like the testinfra hosts do. Otherwise it runs as the login account.
    """
    connect(name)  # raises Unreachable at once for a host known unreachable
    _refuse_key_reads(command)
    if root and login_user(name) not in ("", "root"):
        command = f"sudo -n /bin/sh -c {shlex.quote(command)}"
    plugin.record_command(f"{command}  # stdin: the secret, from the state directory")
    cmd = ["ssh", "-F", context()["ssh_config"], name, command]
    try:
        return tg.retry_transport(
            lambda: subprocess.run(cmd, input=secret + "\n", capture_output=True, text=True, timeout=timeout),
            lambda: _probe(name),
            name,
        )
    except tg.Unreachable as e:
        _mark_down(e)
        raise


@pytest.fixture(autouse=True)
def reachable(request: pytest.FixtureRequest) -> None:
    """A check of a host known unreachable is not run: it is reported unreachable."""
    cs = getattr(request.node, "callspec", None)
    t = cs.params.get("target") if cs is not None else None
    if isinstance(t, Target) and (reason := unreachable_reason(t.name)):
        raise tg.Unreachable(t.name, reason.removeprefix(f"{t.name}: "))


def role_default(role: str, var: str, roles_dir: Path = ROOT / "roles"):
    """A role's plain default (defaults/main.yml), so checks and roles share one name."""
    return yaml.safe_load((roles_dir / role / "defaults" / "main.yml").read_text(encoding="utf-8"))[var]


def secret(kommune: str, name: str) -> str:
    """A Kommune's secret as the roles store it on the control host (state/secrets/<slug>/<name>,
    ansible-vault encrypted: basisit.secrets decrypts it)."""
    from basisit import secrets, sitefacts

    path = sitefacts.state_dir(None) / "secrets" / kommune / name
    try:
        value = secrets.value(path)
    except FileNotFoundError:
        value = ""
    except secrets.SecretError as e:
        pytest.fail(f"{kommune}: {e}", pytrace=False)
    if not value:
        pytest.fail(f"{kommune}: no secret {path}; converge the site (playbooks/site.yml -l {kommune})", pytrace=False)
    return value


@pytest.fixture(scope="module")
def host(target: Target):
    return connect(target.name)


def sshd_effective(h) -> dict[str, str]:
    """`sshd -T`: the effective sshd configuration, keys lower-case, multi-valued keys joined."""
    out: dict[str, str] = {}
    for line in h.check_output("sshd -T").splitlines():
        k, _, v = line.partition(" ")
        out[k.lower()] = f"{out[k.lower()]} {v}" if k.lower() in out else v
    return out


def tcp_probe(h, address: str, port: int, timeout: float = 2.0, source: str = "") -> str:
    """From host h (bound to `source` when given): 'open', 'refused' or 'timeout' for a TCP connect."""
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.settimeout(float(sys.argv[3]))\n"
        "if sys.argv[4]:s.bind((sys.argv[4],0))\n"
        "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print('open')\n"
        "except socket.timeout:print('timeout')\n"
        "except ConnectionRefusedError:print('refused')\n"
        "except OSError as e:print('timeout' if e.errno in (113,101) else 'error:'+str(e))\n"
    )
    return h.check_output(
        f"python3 -c {shlex.quote(code)} %s %s %s %s", address, str(port), str(timeout), source
    ).strip()


def udp_dns_probe(h, address: str, name: str = "localhost", timeout: float = 2.0, source: str = "") -> str:
    """From host h (bound to `source` when given): 'answer' when a DNS server at address answers over UDP."""
    code = (
        "import socket,sys,struct\n"
        "q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in sys.argv[2].split('.'))+b'\\0'+struct.pack('>HH',1,1)\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(float(sys.argv[3]))\n"
        "if sys.argv[4]:s.bind((sys.argv[4],0))\n"
        "s.sendto(q,(sys.argv[1],53))\n"
        "try:\n d=s.recv(512);print('answer' if d[:2]==q[:2] else 'garbage')\n"
        "except socket.timeout:print('timeout')\n"
        "except OSError:print('timeout')\n"
    )
    return h.check_output(f"python3 -c {shlex.quote(code)} %s %s %s %s", address, name, str(timeout), source).strip()


def words(s: str) -> set[str]:
    return set(re.split(r"[\s,]+", s.strip())) - {""}


def configured_hard_limit(text: str, domain: str, item: str) -> str | None:
    """The hard value pam_limits' files give `domain` for `item` (the last `hard` or `-` line wins;
    None when no line sets it)."""
    value = None
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 4 and fields[0] == domain and fields[1] in ("hard", "-") and fields[2] == item:
            value = fields[3]
    return value
