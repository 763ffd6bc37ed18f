"""The golden image: Debian 12 built once with debootstrap, packages from one list, cached by hash.

The package list is `inventory/group_vars/all/basisit_image.yml` (the roles read it too). The
image's key is a hash of that file, the builder's recipe version and the mirrors, so a change to
any of them builds a new image; an unchanged list reuses the cached one. Hosts never modify the
image: each host mounts it as the lower layer of its own overlay.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from basisit.lab import names, system
from basisit.lab.system import LabError
from basisit.model import AUTOMATION_USER

IMAGE_LIST = Path("group_vars") / "all" / "basisit_image.yml"  # relative to the inventory directory
IMAGES_ENV = "BASISIT_LAB_IMAGES"  # where images are cached (default: <state>/lab/images)
MIRROR_ENV = "BASISIT_LAB_MIRROR"
SECURITY_MIRROR_ENV = "BASISIT_LAB_SECURITY_MIRROR"
# Bump when the recipe below changes in a way that changes the image.
RECIPE_VERSION = (
    4  # 3: the automation account and its bootstrap sudo rule, root login refused; 4: apt-cacher-ng disabled
)
# Daemons no host may start before provisioning; the roles unmask what a host needs.
MASKED = ("smbd", "nmbd", "winbind", "samba-ad-dc")
# Services only some roles run: installed, not enabled (the role that needs one enables it).
DISABLED = (
    "unbound",
    "kea-dhcp4-server",
    "kea-ctrl-agent",
    "sssd",
    "systemd-networkd-wait-online",
    "apt-cacher-ng",
)
BASE_INCLUDE = ("systemd", "systemd-sysv", "dbus", "ca-certificates")


@dataclass(frozen=True)
class ImageSpec:
    suite: str
    packages: tuple[str, ...]
    packages_no_recommends: tuple[str, ...]
    mirror: str
    security_mirror: str
    list_file: Path
    key: str


@dataclass(frozen=True)
class Image:
    key: str
    root: Path
    meta: dict


def images_dir(state: Path) -> Path:
    env = os.environ.get(IMAGES_ENV)
    return Path(env) if env else state / "lab" / "images"


# --- the spec (pure but for reading files) ---------------------------------------------------


def _apt_entries(apt_dir: Path) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every `deb` entry in the host's apt sources."""
    entries: list[tuple[str, list[str], list[str]]] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for f in one_line:
        if not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 4 and line[0] == "deb":
                entries.append((line[1], [line[2]], line[3:]))
    for f in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for para in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
            fields: dict[str, str] = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return entries


def host_mirrors(suite: str, apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian mirror and security mirror the host's apt uses for `suite` (env overrides)."""
    entries = _apt_entries(apt_dir)

    def find(s: str) -> str | None:
        for uri, suites, comps in entries:
            if s in suites and "main" in comps:
                return uri.rstrip("/")
        return None

    mirror = os.environ.get(MIRROR_ENV) or find(suite)
    security = os.environ.get(SECURITY_MIRROR_ENV) or find(f"{suite}-security")
    if not mirror:
        raise LabError(
            f"the host's apt sources (/etc/apt) have no `{suite} main` entry to build the image from; "
            f"add one or set {MIRROR_ENV}=<Debian mirror URL>"
        )
    if not security:
        raise LabError(
            f"the host's apt sources have no `{suite}-security main` entry; add one or set {SECURITY_MIRROR_ENV}=<URL>"
        )
    return mirror, security


def load_spec(inventory: Path) -> ImageSpec:
    path = Path(inventory) / IMAGE_LIST
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except FileNotFoundError as e:
        raise LabError(f"{path}: not found; it holds basisit_image_packages, the golden image's package list") from e
    except yaml.YAMLError as e:
        raise LabError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise LabError(f"{path}: expected a mapping with basisit_image_suite and basisit_image_packages")
    suite = data.get("basisit_image_suite", "bookworm")
    pk = data.get("basisit_image_packages")
    nr = data.get("basisit_image_packages_no_recommends") or []
    for field, val in (("basisit_image_packages", pk), ("basisit_image_packages_no_recommends", nr)):
        if not isinstance(val, list) or not all(
            isinstance(p, str) and re.match(r"^[a-z0-9][a-z0-9+.-]+$", p) for p in val
        ):
            raise LabError(f"{path}: {field} must be a list of Debian package names")
    if not isinstance(suite, str) or not re.match(r"^[a-z]+$", suite):
        raise LabError(f"{path}: basisit_image_suite must be a Debian code name such as bookworm")
    mirror, security = host_mirrors(suite)
    h = hashlib.sha256()
    h.update(raw)
    h.update(f"\0recipe={RECIPE_VERSION}\0{mirror}\0{security}\0{os.uname().machine}".encode())
    return ImageSpec(suite, tuple(pk), tuple(nr), mirror, security, path, h.hexdigest()[:16])


# --- building --------------------------------------------------------------------------------

SETUP_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
apt-get -q update
apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install $PACKAGES
if [ -n "$PACKAGES_NR" ]; then apt-get -q -y --no-install-recommends install $PACKAGES_NR; fi
systemctl mask $MASKED
for s in $DISABLED; do systemctl disable "$s" 2>/dev/null || true; done
systemctl enable systemd-networkd ssh
rm -f /usr/sbin/policy-rc.d /etc/ssh/ssh_host_*
# The automation account (Ansible, verify, the lab connect as it; host creation adds the key).
# base's /etc/sudoers.d/basisit replaces this bootstrap rule at the first converge, keeping it.
useradd --system --user-group --create-home --shell /bin/bash --comment "basisit automation" "$AUTOMATION_USER"
printf '# basisit golden image: bootstrap rule, replaced by the base role\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n' \
  "$AUTOMATION_USER" > /etc/sudoers.d/basisit
chmod 0440 /etc/sudoers.d/basisit
visudo -c -q
"""


def _sources(spec: ImageSpec) -> str:
    s = spec.suite
    return (
        "# basisit golden image (written by `basisit lab image`)\n"
        f"deb {spec.mirror} {s} main\n"
        f"deb {spec.mirror} {s}-updates main\n"
        f"deb {spec.security_mirror} {s}-security main\n"
    )


def find(state: Path, spec: ImageSpec) -> Image | None:
    d = images_dir(state) / spec.key
    meta = d / "image.json"
    if not meta.is_file():
        return None
    return Image(spec.key, d / "root", json.loads(meta.read_text(encoding="utf-8")))


def by_key(state: Path, key: str) -> Image | None:
    d = images_dir(state) / key
    meta = d / "image.json"
    if not meta.is_file():
        return None
    return Image(key, d / "root", json.loads(meta.read_text(encoding="utf-8")))


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _nspawn_build(root: Path, apt_cache: Path, script: str, env: dict[str, str], log: Path, pfx: str) -> None:
    """Run the setup script in the (not booted) image, in a cgroup of its own."""
    group, name = names.cgroup_group(pfx), f"{pfx}-image-{os.getpid()}"
    system.ensure_cgroup(group, name)
    cg = " ".join(str(system.cgroup_dir(h, group, name) / "cgroup.procs") for h in system.HIERARCHIES)
    argv = [
        "systemd-nspawn",
        "-q",
        "-D",
        str(root),
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        "--resolv-conf=copy-host",
        "--timezone=off",
        f"--bind={apt_cache}:/var/cache/apt/archives",
        *[f"--setenv={k}={v}" for k, v in env.items()],
        "/bin/bash",
        "-c",
        script,
    ]
    launcher = f'for f in {cg}; do echo $$ > "$f"; done; exec "$@"'
    try:
        with open(log, "a") as out:
            p = subprocess.run(
                ["bash", "-c", launcher, "bash", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        if p.returncode != 0:
            raise LabError(f"installing the image's packages failed (exit {p.returncode}); see {log}")
    finally:
        if system.cgroup_populated(group, name):
            system.cgroup_kill(group, name)
            system.poll(f"build cgroup {name} to empty", lambda: not system.cgroup_populated(group, name), 10)
        system.remove_cgroup(group, name)
        system.remove_group_if_empty(group)


def build(state: Path, spec: ImageSpec, pfx: str, progress=print, force: bool = False) -> tuple[Image, float | None]:
    """Return the cached image for spec, building it first when missing. (image, build seconds or None)."""
    base = images_dir(state)
    with _lock(base / f"{spec.key}.lock"):
        img = find(state, spec)
        if img and not force:
            return img, None
        missing = system.missing_tools(["debootstrap", "systemd-nspawn"])
        if missing:
            raise system.LabEnvError(
                f"{', '.join(missing)} not found; run `make setup` (installs debootstrap, systemd-container)"
            )
        t0 = time.monotonic()
        final = base / spec.key
        work = base / f"{spec.key}.building"
        for d in (work, final):
            if d.exists():
                shutil.rmtree(d)
        root = work / "root"
        root.mkdir(parents=True)
        cache = base / "_cache"
        deb_cache, apt_cache = cache / "debootstrap", cache / "apt"
        deb_cache.mkdir(parents=True, exist_ok=True)
        apt_cache.mkdir(parents=True, exist_ok=True)
        log = work / "build.log"
        progress(f"image {spec.key}: debootstrap {spec.suite} from {spec.mirror} (log: {final / 'build.log'})")
        _debootstrap(spec, root, deb_cache, log)
        _install_packages(spec, root, apt_cache, log, pfx, progress)
        meta = _meta(spec, t0)
        (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        work.rename(final)
        secs = time.monotonic() - t0
        progress(f"image {spec.key}: built in {secs:.0f} s")
        return Image(spec.key, final / "root", meta), secs


def _debootstrap(spec: ImageSpec, root: Path, deb_cache: Path, log: Path) -> None:
    """A minimal Debian in root, with the base packages every host needs to boot under nspawn."""
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={deb_cache.resolve()}",
        f"--include={','.join(BASE_INCLUDE)}",
        spec.suite,
        str(root),
        spec.mirror,
    ]
    with open(log, "a") as out:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    if p.returncode != 0:
        raise LabError(f"debootstrap failed (exit {p.returncode}); see {log}")


def _install_packages(spec: ImageSpec, root: Path, apt_cache: Path, log: Path, pfx: str, progress) -> None:
    """The image's sources and packages (SETUP_SCRIPT in a build container), then its final touches."""
    (root / "etc/apt/sources.list").write_text(_sources(spec), encoding="utf-8")
    n = len(spec.packages) + len(spec.packages_no_recommends)
    progress(f"image {spec.key}: installing {n} packages from {spec.list_file}")
    env = {
        "PACKAGES": " ".join(spec.packages),
        "PACKAGES_NR": " ".join(spec.packages_no_recommends),
        "MASKED": " ".join(MASKED),
        "DISABLED": " ".join(DISABLED),
        "AUTOMATION_USER": AUTOMATION_USER,
    }
    _nspawn_build(root, apt_cache.resolve(), SETUP_SCRIPT, env, log, pfx)
    _finish(root)


def _meta(spec: ImageSpec, t0: float) -> dict:
    """image.json: what the image was built from, when, and how long it took."""
    return {
        "key": spec.key,
        "suite": spec.suite,
        "mirror": spec.mirror,
        "security_mirror": spec.security_mirror,
        "packages": list(spec.packages),
        "packages_no_recommends": list(spec.packages_no_recommends),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - t0, 1),
    }


def _finish(root: Path) -> None:
    """Make the image host-neutral: no machine-id, no host keys, no hostname, plain resolv.conf."""
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    (root / "etc/hostname").write_text("localhost\n", encoding="utf-8")
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("# written per host by `basisit lab up`; the roles manage it\n", encoding="utf-8")
    sshd = root / "etc/ssh/sshd_config.d"
    sshd.mkdir(parents=True, exist_ok=True)
    # base's drop-in of the same name replaces it at the first converge (it owns sshd_config.d).
    (sshd / "10-basisit.conf").write_text(
        "# basisit golden image: every host gets its own ed25519 host key, no other type; no root login\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin no\n",
        encoding="utf-8",
    )
    # auditd cannot run in a container ("audit support not in kernel"): skip it there instead of
    # leaving every host degraded; on a VM the unit runs as usual.
    dropin = root / "etc/systemd/system/auditd.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "basisit-container.conf").write_text(
        "# basisit golden image: the kernel refuses audit inside containers\n[Unit]\nConditionVirtualization=!container\n",
        encoding="utf-8",
    )
    # The journal stays in memory (/run): hosts are cattle, and the overlay stays small.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/log/journal")


def remove_all(state: Path) -> list[Path]:
    base = images_dir(state)
    if not base.exists():
        return []
    removed = [p for p in base.iterdir() if p.is_dir() and p.name != "_cache"]
    shutil.rmtree(base)
    return removed
