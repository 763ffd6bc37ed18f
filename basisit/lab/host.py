"""One lab machine: its directory, overlay, cgroup, wrapper process, start and stop.

Layout under <state>/lab/hosts/<machine>/:

    host.json   what was created (exact names: machine, veths, bridges, image key)
    upper/ work/ root/   the overlay (lower = the read-only image); root/ is what nspawn boots
    run.sh      the wrapper: joins the machine's cgroup, runs nspawn, restarts it on exit 133
    links       veth-extra NICs "HOSTIF GUESTIF BRIDGE" (gateways), re-read at every (re)start
    stop        present while the lab stops the machine (the wrapper then does not restart)
    console.log nspawn's output

PIDs come from the machine's cgroups (`supervisor` = nspawn, `payload/init.scope` = the guest's
init), never from pid files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from basisit.lab import names, plan, system
from basisit.lab.system import LabError
from basisit.model import AUTOMATION_USER

STOP_TERM_SECONDS = 8
STOP_POWEROFF_SECONDS = 6


@dataclass(frozen=True)
class Record:
    """What host.json says: enough to stop and remove a machine without the model."""

    machine: str
    host: str
    site: str
    group: str
    image: str
    veths: tuple[str, ...]
    address: str

    @classmethod
    def load(cls, d: Path) -> Record | None:
        try:
            raw = json.loads((d / "host.json").read_text(encoding="utf-8"))
            return cls(
                raw["machine"],
                raw["host"],
                raw["site"],
                raw["group"],
                raw["image"],
                tuple(raw["veths"]),
                raw["address"],
            )
        except (FileNotFoundError, ValueError, KeyError):
            return None


def hosts_dir(state: Path) -> Path:
    return state / "lab" / "hosts"


def host_dir(state: Path, machine: str) -> Path:
    return hosts_dir(state) / machine


def records(state: Path) -> list[tuple[Path, Record]]:
    out = []
    d = hosts_dir(state)
    if d.is_dir():
        for p in sorted(d.iterdir()):
            r = Record.load(p)
            if r:
                out.append((p, r))
    return out


# --- state -----------------------------------------------------------------------------------


def nspawn_pid(group: str, machine: str) -> int | None:
    pids = system.cgroup_pids(group, machine, "supervisor")
    return pids[0] if pids else None


def init_pid(group: str, machine: str) -> int | None:
    for sub in ("payload/init.scope", "payload"):
        pids = system.cgroup_pids(group, machine, sub)
        if pids:
            return pids[0]
    return None


def is_running(group: str, machine: str, root: Path) -> bool:
    return nspawn_pid(group, machine) is not None and init_pid(group, machine) is not None and system.is_mounted(root)


# --- preparing -------------------------------------------------------------------------------


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".basisit-tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def prepare(
    state: Path,
    hp: plan.HostPlan,
    image_key: str,
    image_root: Path,
    pubkey: str,
    pfx: str,
    extra_links: tuple[plan.Nic, ...] | list[plan.Nic] = (),
) -> Path:
    """Create or refresh the machine's directory and the guest files in its overlay upper dir."""
    d = host_dir(state, hp.machine)
    upper = d / "upper"
    fresh = not upper.exists()
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if fresh:
        _write(upper / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        key = upper / "etc/ssh/ssh_host_ed25519_key"
        key.parent.mkdir(parents=True, exist_ok=True)
        system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{hp.host.fqdn}", "-f", str(key)])
    for rel, content in plan.guest_files(hp).items():
        if fresh or rel not in plan.SEED_ONLY:
            _write(upper / rel, content)
    authorize(upper, image_root, pubkey)
    if hp.router:
        set_links(state, hp, extra_links)
    rec = {
        "machine": hp.machine,
        "host": hp.host.name,
        "site": hp.site,
        "group": names.cgroup_group(pfx),
        "image": image_key,
        "veths": [n.host_if for n in hp.nics],
        "address": str(hp.host.address),
        "addresses": [str(a) for a in hp.host.addresses.values()],
    }
    old_rec = Record.load(d)
    if old_rec and old_rec.image != image_key:
        rec["image"] = old_rec.image  # an existing overlay stays on the image it was made from
    _write(d / "host.json", json.dumps(rec, indent=2) + "\n")
    _write(d / "run.sh", _wrapper(d, hp, rec["group"], image_root), 0o755)
    return d


def automation_account(image_root: Path, user: str = AUTOMATION_USER) -> tuple[int, int, str]:
    """(uid, gid, home) of the automation account in the image's /etc/passwd; LabError without it."""
    for line in (image_root / "etc/passwd").read_text(encoding="utf-8").splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[0] == user:
            return int(f[2]), int(f[3]), f[5]
    raise LabError(
        f"the golden image {image_root.parent.name} has no account {user}: rebuild it "
        "(`basisit lab image --rebuild`) and recreate the hosts made from an older image (`basisit lab down`)"
    )


def authorize(upper: Path, image_root: Path, pubkey: str, user: str = AUTOMATION_USER) -> Path:
    """The operator key as the automation account's only key, in the overlay's upper dir. A
    directory created in the upper dir hides the image's attributes, so each one gets the owner
    and mode it has in the image. Root gets no key (an older host's is removed): root never logs in."""
    uid, gid, home = automation_account(image_root, user)
    rel = Path(home.lstrip("/"))
    for part in [*reversed(rel.parents[:-1]), rel]:
        src, dst = image_root / part, upper / part
        if not dst.is_dir():
            dst.mkdir()
            st = src.stat()
            os.chown(dst, st.st_uid, st.st_gid)
            dst.chmod(st.st_mode & 0o7777)
    ssh_dir = upper / rel / ".ssh"
    if not ssh_dir.is_dir():
        ssh_dir.mkdir()
    os.chown(ssh_dir, uid, gid)
    ssh_dir.chmod(0o700)
    keys = ssh_dir / "authorized_keys"
    _write(keys, pubkey.strip() + "\n", 0o600)
    os.chown(keys, uid, gid)
    (upper / "root/.ssh/authorized_keys").unlink(missing_ok=True)
    return keys


def host_pubkey(d: Path) -> str | None:
    p = d / "upper/etc/ssh/ssh_host_ed25519_key.pub"
    return p.read_text(encoding="utf-8").strip() if p.exists() else None


def _wrapper(d: Path, hp: plan.HostPlan, group: str, image_root: Path) -> str:
    q = shlex.quote
    procs = " ".join(q(str(system.cgroup_dir(h, group, hp.machine) / "cgroup.procs")) for h in system.HIERARCHIES)
    nspawn = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={d / 'root'}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={hp.machine}",
        f"--hostname={hp.host.short}",
        "--console=passive",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
    ]
    if not hp.router:
        nspawn.append(f"--network-bridge={hp.nics[0].bridge}")
    return f"""#!/bin/bash
# basisit lab: runs machine {hp.machine} ({hp.host.name}); written by `basisit lab up`.
# Joins the machine's own cgroup, boots it with systemd-nspawn and boots it again when the
# guest reboots (nspawn exits 133), unless the lab is stopping it ({d / "stop"} exists).
set -u
D={q(str(d))}
for f in {procs}; do echo $$ > "$f"; done
while :; do
  args=() links=()
  if [ -f "$D/links" ]; then
    while read -r hif gif br; do
      [ -n "$hif" ] && [ -e "/sys/class/net/$br" ] || continue
      args+=("--network-veth-extra=$hif:$gif"); links+=("$hif $br")
    done < "$D/links"
  fi
  echo "$(date -Is) basisit: starting {hp.machine}"
  {" ".join(q(a) for a in nspawn)} "${{args[@]}}" </dev/null &
  pid=$!
  for l in "${{links[@]}}"; do
    set -- $l
    for _ in $(seq 300); do
      ip link set dev "$1" master "$2" up 2>/dev/null && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  wait "$pid"; rc=$?
  echo "$(date -Is) basisit: nspawn exited with $rc"
  if [ "$rc" -ne 133 ] || [ -e "$D/stop" ]; then exit "$rc"; fi
done
"""


# --- start and stop --------------------------------------------------------------------------


def start(state: Path, machine: str, image_root: Path) -> None:
    """Mount the overlay and launch the wrapper in the machine's cgroup (returns at once)."""
    d = host_dir(state, machine)
    rec = Record.load(d)
    if rec is None:
        raise LabError(f"{d}/host.json is missing; run `basisit lab up` again")
    if system.cgroup_populated(rec.group, machine):
        stop(state, machine)  # leftovers (a guest whose nspawn died): stop them before booting again
    (d / "stop").unlink(missing_ok=True)
    root = d / "root"
    if not system.is_mounted(root):
        system.mount_overlay(image_root, d / "upper", d / "work", root)
    system.ensure_cgroup(rec.group, machine)
    log = open(d / "console.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        subprocess.Popen(
            ["bash", str(d / "run.sh")], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()


def _wait_empty(group: str, machine: str, seconds: float) -> bool:
    try:
        system.poll(f"{machine} to stop", lambda: not system.cgroup_populated(group, machine), seconds)
        return True
    except LabError:
        return False


def stop(state: Path, machine: str, group: str | None = None) -> None:
    """Stop a machine as measured on the lab machines (docs/lab.md, "Stop"): SIGTERM nspawn, then poweroff the guest, then cgroup.kill."""
    d = host_dir(state, machine)
    rec = Record.load(d)
    group = group or (rec.group if rec else names.cgroup_group(names.prefix()))
    if d.exists():
        (d / "stop").touch()
    if system.cgroup_populated(group, machine):
        pid = nspawn_pid(group, machine)
        if pid:
            _signal(pid, signal.SIGTERM)
        if not _wait_empty(group, machine, STOP_TERM_SECONDS if pid else 0.1):
            ipid = init_pid(group, machine)
            if ipid:
                _signal(ipid, signal.SIGRTMIN + 4)  # systemd: poweroff
            if not _wait_empty(group, machine, STOP_POWEROFF_SECONDS if ipid else 0.1):
                system.cgroup_kill(group, machine)
                if not _wait_empty(group, machine, 10):
                    raise LabError(f"{machine}: processes survive cgroup.kill; see {d / 'console.log'}")
    system.unmount(d / "root")
    system.remove_cgroup(group, machine)
    if rec:
        for v in rec.veths:
            system.delete_link(v)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def hot_add_link(group: str, machine: str, nic: plan.Nic) -> bool:
    """Give a running machine one more NIC (a veth whose guest end moves into its netns). True if added."""
    if system.link_exists(nic.host_if):
        system.attach(nic.host_if, nic.bridge)
        return False
    pid = init_pid(group, machine)
    if pid is None:
        raise LabError(f"{machine} is not running; cannot add its interface {nic.guest_if}")
    system.run(
        ["ip", "link", "add", "name", nic.host_if, "type", "veth", "peer", "name", nic.guest_if, "netns", str(pid)]
    )
    system.attach(nic.host_if, nic.bridge)
    return True


def _link_line(n: plan.Nic) -> str:
    return f"{n.host_if} {n.guest_if} {n.bridge}"


def set_links(state: Path, hp: plan.HostPlan, extra: tuple[plan.Nic, ...] | list[plan.Nic] = ()) -> None:
    """The gateway's veth-extra NICs (its zones plus, for zentral, one per Kommune transfer bridge)."""
    lines = [_link_line(n) for n in (*hp.nics, *extra)]
    _write(host_dir(state, hp.machine) / "links", "\n".join(lines) + "\n")


def remove_link_line(state: Path, machine: str, host_if: str) -> None:
    p = host_dir(state, machine) / "links"
    if p.exists():
        keep = [line for line in p.read_text(encoding="utf-8").splitlines() if line.split()[:1] != [host_if]]
        _write(p, "\n".join(keep) + "\n")
