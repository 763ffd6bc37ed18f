"""`lab up`, `lab down`, `lab status`: realise, remove and report sites. Orchestration only.

Every name the lab creates is recorded when created (host.json per machine, sites/<slug>.json
per site) and derived from the model (basisit.lab.names); clean-up deletes exact names only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from basisit import domainguard, model, policy, sitefacts
from basisit.lab import host, image, names, plan, ssh, system
from basisit.lab.system import LabError

Out = Callable[[str], None]
SSH_READY_SECONDS = 180
NETWORK_DIR = "/etc/systemd/network"
FORWARD_COMMENT = "basisit-lab"
UNREACHABLE_METRIC = "4000"  # below the lab's route: supernet traffic never leaves by the uplink


def lab_dir(state: Path) -> Path:
    return state / "lab"


def site_record_path(state: Path, slug: str) -> Path:
    return lab_dir(state) / "sites" / f"{slug}.json"


def site_records(state: Path) -> dict[str, dict]:
    d = lab_dir(state) / "sites"
    out = {}
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                continue
    return out


@contextlib.contextmanager
def locked(state: Path):
    """One `lab up`/`lab down` at a time per state directory."""
    p = lab_dir(state) / "lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise LabError(f"another `basisit lab` command is running on {state}; wait for it to finish") from e
        yield


OWNER_FILE = Path("/run/basisit-lab/owner.json")


def owner() -> dict | None:
    """The lab that holds this machine (one at a time: the host routes the Land supernet to it)."""
    try:
        return json.loads(OWNER_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def owner_active(o: dict) -> bool:
    """True while a host of that lab runs (or its guest outlived nspawn); records alone are leftovers."""
    for d, rec in host.records(Path(o["state"])):
        if host.is_running(rec.group, rec.machine, d / "root") or system.cgroup_populated(rec.group, rec.machine):
            return True
    return False


def retire(estate: model.Estate, o: dict, out: Out = print) -> None:
    """Take down the lab `o` that holds this machine: its own `lab down --all`, with its prefix and state.

    Used for a stale owner (nothing of it runs: an interrupted session left bridges, routes, mounts)
    and by the CI lab tests, where no developer's lab can be running. Everything it removes carries
    that lab's recorded or model-derived names.
    """
    other = Path(o["state"])
    out(f"lab: taking down the lab of {other} (prefix {o['prefix']}) that holds this machine")
    # its state directory may be gone (removed by hand): then only the model-derived names are left
    with locked(other) if lab_dir(other).is_dir() else contextlib.nullcontext():
        _down(estate, [], True, False, other, out, pfx=o["prefix"])
    OWNER_FILE.unlink(missing_ok=True)


def claim(estate: model.Estate, state: Path, pfx: str, out: Out = print) -> None:
    o = owner()
    me = {"state": str(state.resolve()), "prefix": pfx}
    if o and o != me:
        if owner_active(o):
            raise LabError(
                f"the lab of {o['state']} (prefix {o['prefix']}) is up on this machine and only one lab runs at a "
                f"time; take it down first: basisit --state {o['state']} lab down --all"
            )
        retire(estate, o, out)  # stale: what an interrupted run left, removed by its own names
    if owner() != me:
        OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(json.dumps(me) + "\n", encoding="utf-8")


def owns(state: Path, pfx: str) -> bool:
    """True when this state directory holds the machine, or nobody active does."""
    o = owner()
    return o is None or o == {"state": str(state.resolve()), "prefix": pfx} or not owner_active(o)


def release(state: Path, pfx: str) -> None:
    if owns(state, pfx):
        OWNER_FILE.unlink(missing_ok=True)


def preflight(need_image_tools: bool = False) -> None:
    system.require_root()
    tools = ["systemd-nspawn", "ip", "ssh", "ssh-keygen", "mount"]
    if need_image_tools:
        tools.append("debootstrap")
    missing = system.missing_tools(tools)
    if missing:
        raise system.LabEnvError(
            f"{', '.join(missing)} not found; run `make setup` (installs debootstrap, systemd-container)"
        )
    system.check_cgroups()


# --- control host networking -----------------------------------------------------------------


def _routes(dest: str) -> list[dict]:
    return json.loads(system.run(["ip", "-j", "route", "show", "exact", dest]) or "[]")


def ensure_control(estate: model.Estate, pfx: str) -> list[str]:
    """The operator's address on zentral's management bridge and the supernet route via zentral's gateway."""
    changes = []
    br = names.bridge(estate.zentral, "management", pfx)
    addr, gw, net = plan.control_address(estate), plan.control_gateway(estate), str(plan.supernet(estate))
    for r in _routes(net):
        if r.get("type", "unicast") == "unicast" and r.get("dev") != br:
            raise LabError(
                f"the host already routes {net} via {r.get('dev')}; another basisit lab (other prefix) or a real "
                "network uses it; take that lab down (basisit lab down --all) first"
            )
    have = json.loads(system.run(["ip", "-j", "-4", "addr", "show", "dev", br]) or "[]")
    if not any(a.get("local") == str(addr.ip) for i in have for a in i.get("addr_info", [])):
        system.run(["ip", "addr", "add", str(addr), "dev", br])
        changes.append(f"control host: {addr} on {br}")
    current = _routes(net)
    if not any(r.get("dev") == br and r.get("gateway") == str(gw) for r in current):
        system.run(["ip", "route", "replace", net, "via", str(gw), "dev", br])
        changes.append(f"control host: route {net} via {gw} ({br})")
    if not any(r.get("type") == "unreachable" for r in current):
        system.run(["ip", "route", "add", "unreachable", net, "metric", UNREACHABLE_METRIC])
        changes.append(f"control host: fallback route unreachable {net} (never via the uplink)")
    return changes


def remove_control(estate: model.Estate, pfx: str) -> None:
    net = str(plan.supernet(estate))
    br = names.bridge(estate.zentral, "management", pfx)
    for r in _routes(net):
        if r.get("type") == "unreachable" and str(r.get("metric")) == UNREACHABLE_METRIC:
            system.run(["ip", "route", "del", "unreachable", net, "metric", UNREACHABLE_METRIC], check=False)
        elif r.get("dev") == br:
            system.run(["ip", "route", "del", net, "dev", br], check=False)


# --- the package upstream (the forwarder on the control host) ---------------------------------

UPSTREAM_NAME = plan.UPSTREAM_NAME  # its cgroup: <cgroup group of the prefix>/aptproxy, next to the machines'
UPSTREAM_PORT = plan.UPSTREAM_PORT
UPSTREAM_READY_SECONDS = 10.0
upstream_record_path = plan.upstream_record_path
upstream_record = plan.upstream_record


def upstream_spec(estate: model.Estate, suite: str) -> dict:
    """The forwarder zentral's package proxy uses in the lab: on the control host's address, for the
    package proxy host only, to the mirrors the host's apt uses (as the golden image is built)."""
    mirror, security = image.host_mirrors(suite)
    allow = []
    for url in (mirror, security):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise LabError(
                f"the lab's package path forwards plain http only; the host's mirror {url} is not http:// "
                f"(set {image.MIRROR_ENV} / {image.SECURITY_MIRROR_ENV} to an http:// mirror)"
            )
        allow.append(u.netloc.lower())
    listen = str(plan.control_address(estate).ip)
    peers = [str(h.address) for h in estate.zentral.hosts_with_role(policy.PACKAGE_PROXY_ROLE)]
    return {
        "listen": f"{listen}:{UPSTREAM_PORT}",
        "url": f"http://{listen}:{UPSTREAM_PORT}",
        "peers": peers,
        "allow": sorted(set(allow)),
        "mirror": mirror,
        "security_mirror": security,
    }


def _upstream_answers(listen: str) -> bool:
    addr, _, port = listen.rpartition(":")
    try:
        with socket.create_connection((addr, int(port)), timeout=1):
            return True
    except OSError:
        return False


def ensure_upstream(estate: model.Estate, state: Path, pfx: str, suite: str) -> list[str]:
    """Start the forwarder (after the control address exists) unless it runs with this spec."""
    spec = upstream_spec(estate, suite)
    group = names.cgroup_group(pfx)
    rec = upstream_record(state)
    running = system.cgroup_populated(group, UPSTREAM_NAME)
    if running and rec and {k: rec.get(k) for k in spec} == spec and _upstream_answers(spec["listen"]):
        return []
    stop_upstream(state, pfx)
    system.ensure_cgroup(group, UPSTREAM_NAME)
    procs = [str(system.cgroup_dir(h, group, UPSTREAM_NAME) / "cgroup.procs") for h in system.HIERARCHIES]
    cmd = ["/bin/sh", "-c", 'for p in $PROCS; do echo $$ > "$p"; done; exec "$@"', "sh", sys.executable, "-I"]
    cmd += [str(Path(__file__).with_name("forwarder.py")), "--listen", spec["listen"]]
    cmd += [a for p in spec["peers"] for a in ("--peer", p)] + [a for h in spec["allow"] for a in ("--allow", h)]
    log_path = lab_dir(state) / f"{UPSTREAM_NAME}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PROCS": " ".join(procs)},
        )
    finally:
        log.close()
    upstream_record_path(state).write_text(json.dumps({**spec, "pid": proc.pid}, indent=2) + "\n", encoding="utf-8")
    deadline = time.monotonic() + UPSTREAM_READY_SECONDS
    while not _upstream_answers(spec["listen"]):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-500:]
            stop_upstream(state, pfx)
            raise LabError(f"the package upstream did not start on {spec['listen']}: {tail.strip()} (log: {log_path})")
        time.sleep(0.1)
    return [
        f"package upstream: forwarder on {spec['listen']} for {', '.join(spec['peers'])} to {', '.join(spec['allow'])}"
    ]


def stop_upstream(state: Path | None, pfx: str) -> None:
    """Stop the forwarder by its exact cgroup (recorded or not) and remove its record."""
    group = names.cgroup_group(pfx)
    if system.cgroup_populated(group, UPSTREAM_NAME):
        system.cgroup_kill(group, UPSTREAM_NAME)
        system.poll("the package upstream to stop", lambda: not system.cgroup_populated(group, UPSTREAM_NAME), 10)
    system.remove_cgroup(group, UPSTREAM_NAME)
    if state is not None:
        upstream_record_path(state).unlink(missing_ok=True)


def _forward_rule(br: str) -> list[str]:
    return ["FORWARD", "-i", br, "-o", br, "-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT"]


def _forward_drops() -> bool:
    """True when iptables exists and its FORWARD policy is not ACCEPT (bridged lab traffic passes it)."""
    if system.missing_tools(["iptables"]):
        return False
    out = system.run(["iptables", "-S", "FORWARD"], check=False)
    return "-P FORWARD ACCEPT" not in out


def allow_bridge(br: str) -> bool:
    if not _forward_drops() or _rule_present(br):
        return False
    system.run(["iptables", "-I", *_forward_rule(br)])
    return True


def _rule_present(br: str) -> bool:
    return subprocess.run(["iptables", "-C", *_forward_rule(br)], capture_output=True).returncode == 0


def remove_bridge(br: str) -> None:
    if not system.missing_tools(["iptables"]):
        while _rule_present(br):
            system.run(["iptables", "-D", *_forward_rule(br)], check=False)
    system.delete_link(br)


# --- up --------------------------------------------------------------------------------------


def _kommune(estate: model.Estate, slug: str) -> model.Site:
    return estate.kommunen[slug]


def _transfer_files(estate: model.Estate, up: list[str], pfx: str) -> tuple[dict[str, str], list[str]]:
    """networkd files of the zentral gateway's transfer NICs for the Kommunen that are up; stale names."""
    files, stale = {}, []
    for slug, site in {**estate.kommunen, **estate.retired}.items():  # a retired one is stale
        nic = plan.transfer_nic(estate, site, pfx)
        if slug in up:
            files[plan.networkd_name(nic)] = plan.networkd_file(nic, forward=True)
        else:
            stale.append(plan.networkd_name(nic))
    return files, stale


def _configure_zentral_transfers(state: Path, address: str, files: dict[str, str], stale: list[str]) -> bool:
    """Write/remove the transfer networkd files in the zentral gateway over SSH. True when anything changed."""
    parts = [
        "set -e",
        "changed=0",
        f"cd {NETWORK_DIR}",
        'put() { t=$(mktemp); cat > "$t"; if cmp -s "$t" "$1"; then rm -f "$t"; '
        'else chmod 644 "$t"; mv "$t" "$1"; changed=1; fi; }',
    ]
    for name, content in files.items():
        parts.append(f"put {shlex.quote(name)} <<'BASISIT_EOF'\n{content}BASISIT_EOF")
    if stale:
        parts.append(
            f'for f in {" ".join(map(shlex.quote, stale))}; do if [ -e "$f" ]; then rm -f "$f"; changed=1; fi; done'
        )
    parts += ['if [ "$changed" = 1 ]; then networkctl reload; fi', 'echo "changed=$changed"']
    out = ssh.check(state, address, "\n".join(parts) + "\n")
    return "changed=1" in out


def _refresh_known_hosts(state: Path) -> None:
    entries = []
    for d, rec in host.records(state):
        key = host.host_pubkey(d)
        if key:
            addrs = json.loads((d / "host.json").read_text(encoding="utf-8")).get("addresses") or [rec.address]
            entries.append(([*addrs, rec.host], key))
    ssh.write_known_hosts(state, entries)


def _facts(estate: model.Estate, state: Path, sp: plan.SitePlan, key: Path) -> bool:
    """Write the site's facts when they differ from what is there (ignoring the timestamp)."""
    hosts = {
        hp.host.name: {
            "roles": list(hp.host.roles),
            "addresses": {z: str(a) for z, a in hp.host.addresses.items()},
            "ansible_host": str(hp.host.address),
            "instance_id": hp.machine,
            "state": "running",
        }
        for hp in sp.hosts
    }
    ssh_facts = {
        "user": ssh.USER,
        "private_key_file": str(key.resolve()),
        "known_hosts_file": str(ssh.known_hosts_file(state).resolve()),
        "common_args": ssh.common_args(state),
    }
    doc = sitefacts.build(sp.site, "lab", estate.standard.version, hosts, ssh_facts)
    try:
        old = sitefacts.read(state, sp.slug)
    except sitefacts.FactsError:
        old = None
    if old and {k: v for k, v in old.items() if k != "generated"} == {k: v for k, v in doc.items() if k != "generated"}:
        return False
    sitefacts.write(state, doc)
    return True


def up(estate: model.Estate, slugs: list[str], state: Path, inventory: Path, out: Out = print) -> int:
    preflight()
    with locked(state):
        return _up(estate, slugs, state, inventory, out)


@dataclass(frozen=True)
class _UpRun:
    """One `lab up`: what its steps share, and the changes made so far (none: 'nothing to change')."""

    estate: model.Estate
    state: Path
    pfx: str
    out: Out
    changes: list[str] = field(default_factory=list)

    def changed(self, line: str, change: str) -> None:
        self.out(line)
        self.changes.append(change)


def _up(estate: model.Estate, slugs: list[str], state: Path, inventory: Path, out: Out) -> int:
    t0 = time.monotonic()
    pfx = names.prefix()
    claim(estate, state, pfx, out)
    run = _UpRun(estate, state, pfx, out)
    spec, img, key, pubkey = _prepare_machine(run, inventory)
    plans, up_kommunen = _up_plans(run, slugs)
    zgw = next(hp for hp in plans[0].hosts if hp.router)
    _ensure_bridges(run, plans)
    for c in ensure_control(estate, pfx):
        run.changed(c, c)
    # zentral's package proxy reaches the Debian mirror through this forwarder only
    for c in ensure_upstream(estate, state, pfx, spec.suite):
        run.changed(c, c)
    # the zentral gateway's transfer NICs, re-read by its wrapper at every (re)boot
    transfer_nics = [plan.transfer_nic(estate, _kommune(estate, s), pfx) for s in up_kommunen]
    started = _start_machines(run, plans, img, pubkey, zgw, transfer_nics)
    for hp in started:
        run.changed(f"{hp.name}: started as {hp.machine}", f"{hp.name} started")
    _refresh_known_hosts(state)
    # the zentral gateway first: every other host is reached through it
    _connect_zentral_gateway(run, zgw, started, transfer_nics, up_kommunen)
    _wait_for_ssh(run, [hp for sp in plans for hp in sp.hosts if hp is not zgw], started)
    for sp in plans:
        if _facts(estate, state, sp, key):
            run.changed(f"{sp.slug}: site facts written to {sitefacts.facts_path(state, sp.slug)}", f"{sp.slug} facts")
    n = sum(len(sp.hosts) for sp in plans)
    took = time.monotonic() - t0
    if not run.changes:
        out(f"lab up: nothing to change; {len(plans)} site(s), {n} host(s) already up and answering SSH ({took:.1f} s)")
    else:
        out(f"lab up: {len(plans)} site(s), {n} host(s) up and answering SSH in {took:.1f} s")
    return 0


def _prepare_machine(run: _UpRun, inventory: Path) -> tuple[image.ImageSpec, image.Image, Path, str]:
    """This machine's inotify limit, the image (built when missing), the operator key."""
    old = system.raise_inotify_instances()
    if old is not None:
        run.changed(
            f"host: raised fs.inotify.max_user_instances from {old} to {system.INOTIFY_WANT} (each container uses ~10)",
            "inotify",
        )
    spec = image.load_spec(inventory)
    img, built = image.build(run.state, spec, run.pfx, progress=run.out)
    if built is not None:
        run.changes.append("image")
    key, pubkey, created = ssh.ensure_key(run.state)
    if created:
        run.changed(f"operator key: created {key}", "key")
    return spec, img, key, pubkey


def _up_plans(run: _UpRun, slugs: list[str]) -> tuple[list[plan.SitePlan], list[str]]:
    """The plans of zentral and the selected Kommunen; every Kommune whose transfer the zentral
    gateway carries (the selected ones and those up before this run)."""
    estate, pfx = run.estate, run.pfx
    recorded = site_records(run.state)
    # Kommunen up before this run stay linked to zentral while their transfer bridge exists
    earlier = [
        s
        for s in recorded
        if s in estate.kommunen and system.link_exists(names.bridge(_kommune(estate, s), "transfer", pfx))
    ]
    up_kommunen = sorted({*slugs, *earlier})
    plans = [plan.site_plan(estate, estate.zentral, pfx)] + [
        plan.site_plan(estate, _kommune(estate, s), pfx) for s in slugs
    ]
    return plans, up_kommunen


def _ensure_bridges(run: _UpRun, plans: list[plan.SitePlan]) -> None:
    """Each site's bridges, let through the host's FORWARD policy, and its record (bridges, machines, transfer veth)."""
    for sp in plans:
        made = [br for br in sp.bridges.values() if system.ensure_bridge(br)]
        for br in sp.bridges.values():
            if allow_bridge(br):
                run.out(
                    f"host: FORWARD policy drops; allowed bridged traffic on {br} (iptables rule '{FORWARD_COMMENT}')"
                )
        rec = {
            "site": sp.slug,
            "bridges": list(sp.bridges.values()),
            "machines": [hp.machine for hp in sp.hosts],
        }
        if not sp.site.is_zentral:
            nic = plan.transfer_nic(run.estate, sp.site, run.pfx)
            rec.update(transfer_veth=nic.host_if, transfer_file=plan.networkd_name(nic))
        p = site_record_path(run.state, sp.slug)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
        if made:
            run.changed(f"{sp.slug}: bridges {' '.join(made)} created", f"{sp.slug} bridges")


def _start_machines(
    run: _UpRun,
    plans: list[plan.SitePlan],
    img: image.Image,
    pubkey: str,
    zgw: plan.HostPlan,
    transfer_nics: list[plan.Nic],
) -> list[plan.HostPlan]:
    """Prepare and start what is not running (start returns at once; boots run in parallel)."""
    started: list[plan.HostPlan] = []
    for sp in plans:
        for hp in sp.hosts:
            d = host.host_dir(run.state, hp.machine)
            rec = host.Record.load(d)
            if rec and host.is_running(rec.group, hp.machine, d / "root"):
                continue
            if rec and (system.cgroup_populated(rec.group, hp.machine) or system.is_mounted(d / "root")):
                # leftovers of a crash (a guest whose nspawn died, a mounted overlay): stop them cleanly,
                # so nothing writes to the overlay's upper dir while it is mounted
                host.stop(run.state, hp.machine)
            root = img.root
            if rec and rec.image != img.key:
                other = image.by_key(run.state, rec.image)
                if other is None:
                    raise LabError(
                        f"{hp.name}: its overlay was made from image {rec.image}, which is gone; "
                        f"run `basisit lab down --kommune {sp.slug}` and up again"
                    )
                root = other.root
            host.prepare(run.state, hp, img.key, root, pubkey, run.pfx, extra_links=transfer_nics if hp is zgw else ())
            host.start(run.state, hp.machine, root)
            started.append(hp)
    return started


def _connect_zentral_gateway(
    run: _UpRun,
    zgw: plan.HostPlan,
    started: list[plan.HostPlan],
    transfer_nics: list[plan.Nic],
    up_kommunen: list[str],
) -> None:
    """Wait for the zentral gateway's SSH, give it the transfer NICs, configure their networks."""
    state = run.state
    zaddr = str(zgw.host.address)
    secs = ssh.wait_ready(state, zaddr, SSH_READY_SECONDS)
    if zgw in started:
        run.out(f"{zgw.name}: ssh ready at {zaddr} ({secs:.1f} s)")
    zrec = host.Record.load(host.host_dir(state, zgw.machine))
    assert zrec is not None
    host.set_links(state, zgw, transfer_nics)
    for nic in transfer_nics:
        if host.hot_add_link(zrec.group, zgw.machine, nic):
            run.changed(f"{zgw.name}: added {nic.guest_if} in {nic.bridge} ({nic.address})", f"link {nic.host_if}")
    files, stale = _transfer_files(run.estate, up_kommunen, run.pfx)
    if _configure_zentral_transfers(state, zaddr, files, stale):
        run.changed(
            f"{zgw.name}: transfer networks configured for {', '.join(up_kommunen) or 'no Kommune'}",
            "zentral transfers",
        )


def _wait_for_ssh(run: _UpRun, waiting: list[plan.HostPlan], started: list[plan.HostPlan]) -> None:
    """Every host answers SSH at its model address (in parallel); LabError naming those that do not."""
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(waiting)))) as pool:
        futs = [(hp, pool.submit(ssh.wait_ready, run.state, str(hp.host.address), SSH_READY_SECONDS)) for hp in waiting]
        for hp, f in futs:
            try:
                s = f.result()
                if hp in started:
                    run.out(f"{hp.name}: ssh ready at {hp.host.address} ({s:.1f} s)")
            except LabError as e:
                errors.append(f"{hp.name}: {e}")
    if errors:
        for e in errors:
            run.out(e)
        raise LabError(f"{len(errors)} host(s) did not answer SSH; see console.log under {host.hosts_dir(run.state)}")


# --- one host: destroyed (a lost machine) and recreated ----------------------------------------


def destroy_host(estate: model.Estate, slug: str, host_name: str, state: Path, out: Out = print) -> str:
    """Lose one machine as a disaster would: stop it and throw its disk (the overlay's upper dir,
    its host key, everything written since the image) away. By its exact model-derived name; the
    site's bridges and the other hosts stay. `lab up` (or `basisit restore`) boots a fresh one from
    the golden image. Returns the machine name."""
    preflight()
    pfx = names.prefix()
    site = estate.site(slug)
    hp = next((h for h in plan.site_plan(estate, site, pfx).hosts if h.host.name == host_name), None)
    if hp is None:
        raise LabError(f"{slug}: no lab host {host_name!r} (hosts: {', '.join(h.name for h in site.hosts)})")
    if hp.router:
        raise LabError(f"{host_name} is a router: destroying it would cut the site off; not supported")
    with locked(state):
        d = host.host_dir(state, hp.machine)
        host.stop(state, hp.machine, names.cgroup_group(pfx))
        if system.is_mounted(d / "root"):
            raise LabError(f"{d / 'root'} is still mounted; cannot throw {hp.machine}'s disk away")
        existed = d.exists()
        if existed:
            shutil.rmtree(d)
    out(f"{host_name}: {hp.machine} stopped and its disk thrown away" if existed else f"{host_name}: no disk to remove")
    return hp.machine


def host_running(estate: model.Estate, slug: str, host_name: str, state: Path) -> bool:
    """True while the lab machine of this host runs (exact model-derived name)."""
    site = estate.site(slug)
    hp = next((h for h in plan.site_plan(estate, site, names.prefix()).hosts if h.host.name == host_name), None)
    if hp is None:
        return False
    d = host.host_dir(state, hp.machine)
    rec = host.Record.load(d)
    return rec is not None and host.is_running(rec.group, hp.machine, d / "root")


# --- down ------------------------------------------------------------------------------------


def _stop_all(state: Path, machines: list[str], out: Out) -> None:
    if not machines:
        return
    errors = []
    with ThreadPoolExecutor(max_workers=min(16, len(machines))) as pool:
        futs = [pool.submit(host.stop, state, m) for m in machines]
        for f in futs:
            try:
                f.result()
            except LabError as e:
                errors.append(str(e))
    for m in machines:
        d = host.host_dir(state, m)
        if d.exists() and not system.is_mounted(d / "root"):
            shutil.rmtree(d)
    if errors:
        raise LabError("; ".join(errors))


def sweep(estate: model.Estate, sites: list[model.Site], state: Path, pfx: str) -> None:
    """Remove every lab object of these sites by its exact model-derived name (records or not)."""
    zentral = estate.zentral
    if any(s.is_zentral for s in sites):
        stop_upstream(None, pfx)
    for site in sites:
        sp = plan.site_plan(estate, site, pfx)
        for hp in sp.hosts:
            host.stop(state, hp.machine, names.cgroup_group(pfx))
            for nic in hp.nics:
                system.delete_link(nic.host_if)
        if not site.is_zentral:
            system.delete_link(names.transfer_veth(zentral, site, pfx))
        for br in sp.bridges.values():
            remove_bridge(br)


def down(estate: model.Estate, slugs: list[str], all_: bool, purge: bool, state: Path, out: Out = print) -> int:
    preflight()
    with locked(state):
        return _down(estate, slugs, all_, purge, state, out, names.prefix())


def _down(estate: model.Estate, slugs: list[str], all_: bool, purge: bool, state: Path, out: Out, pfx: str) -> int:
    recorded = site_records(state)
    zgw = next(hp for hp in plan.site_plan(estate, estate.zentral, pfx).hosts if hp.router)
    targets = sorted(s for s in recorded if s != model.ZENTRAL) if all_ else slugs
    for slug in targets:
        _down_site(state, slug, recorded, zgw, out)
    if not all_:
        _drop_stale_transfers(estate, state, zgw, pfx, out)
        return 0
    if model.ZENTRAL in recorded:
        rec = recorded[model.ZENTRAL]
        _stop_all(state, rec.get("machines", []), out)
        out(f"zentral: down ({len(rec.get('machines', []))} host(s))")
    if upstream_record(state) is not None:
        stop_upstream(state, pfx)
        out("package upstream: stopped")
    if owns(state, pfx):
        remove_control(estate, pfx)
        # anything left by an interrupted run, by exact model-derived names
        sweep(estate, estate.sites, state, pfx)
    else:
        out(f"lab: another state directory holds this machine ({owner()}); removed only what {state} recorded")
    _forget_lab(estate, state, pfx)
    if purge:
        _purge(state, out)
    out("lab down: every lab container, veth, bridge, mount and cgroup removed")
    return 0


def _down_site(state: Path, slug: str, recorded: dict[str, dict], zgw: plan.HostPlan, out: Out) -> None:
    """One Kommune by its record: transfer veth, machines, bridges, facts, the record itself."""
    if slug not in recorded:
        out(f"{slug}: not up; nothing to do")
        return
    rec = recorded[slug]
    if rec.get("transfer_veth"):
        system.delete_link(rec["transfer_veth"])
        host.remove_link_line(state, zgw.machine, rec["transfer_veth"])
    _stop_all(state, rec.get("machines", []), out)
    for br in rec.get("bridges", []):
        remove_bridge(br)
    sitefacts.remove(state, slug)
    site_record_path(state, slug).unlink(missing_ok=True)
    out(f"{slug}: down ({len(rec.get('machines', []))} host(s), bridges {' '.join(rec.get('bridges', []))})")
    # the whole site is gone, its domain members with it: no trust left to keep, the next
    # converge provisions its domain anew (`lab destroy --host` keeps the record: a lost DC)
    if domainguard.forget(state, slug):
        out(f"{slug}: domain record {domainguard.record_path(state, slug)} removed")


def _drop_stale_transfers(estate: model.Estate, state: Path, zgw: plan.HostPlan, pfx: str, out: Out) -> None:
    """zentral stays; drop the transfer files of Kommunen that are gone (best effort: it may be down)."""
    zrec = host.Record.load(host.host_dir(state, zgw.machine))
    if zrec and host.is_running(zrec.group, zgw.machine, host.host_dir(state, zgw.machine) / "root"):
        up_now = [s for s in site_records(state) if s in estate.kommunen]
        files, stale = _transfer_files(estate, up_now, pfx)
        try:
            _configure_zentral_transfers(state, str(zgw.host.address), files, stale)
        except LabError as e:
            out(f"{zgw.name}: could not remove stale transfer files ({e})")


def _forget_lab(estate: model.Estate, state: Path, pfx: str) -> None:
    """What the state directory and the machine keep of the lab: host directories, site records,
    the lab's site facts, the cgroup group, known hosts, the claim on the machine."""
    for d, _rec in host.records(state):
        if not system.is_mounted(d / "root"):
            shutil.rmtree(d)
    for slug in list(site_records(state)):
        site_record_path(state, slug).unlink(missing_ok=True)
    for site in estate.sites:
        if (sitefacts.read(state, site.slug) or {}).get("backend") == "lab":
            sitefacts.remove(state, site.slug)
    system.remove_group_if_empty(names.cgroup_group(pfx))
    ssh.known_hosts_file(state).unlink(missing_ok=True)
    release(state, pfx)


def _purge(state: Path, out: Out) -> None:
    """The images, the operator key and the lab directory; refused while anything in it is mounted."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        mounted = [t for t in (line.split()[4] for line in fh) if t.startswith(f"{lab_dir(state).resolve()}/")]
    if mounted:
        raise LabError(f"{mounted[0]} is still mounted; unmount it, then run `basisit lab down --all --purge` again")
    removed = image.remove_all(state)
    shutil.rmtree(lab_dir(state), ignore_errors=True)
    out(f"lab: purged {len(removed)} image(s), the operator key and {lab_dir(state)}")


# --- status ----------------------------------------------------------------------------------


def status(estate: model.Estate, state: Path) -> list[dict]:
    rows = []
    recs = host.records(state)
    running = {}
    for d, rec in recs:
        running[rec.machine] = host.is_running(rec.group, rec.machine, d / "root")
    with ThreadPoolExecutor(max_workers=16) as pool:
        ready = {
            rec.machine: pool.submit(ssh.answers, state, rec.address) if running[rec.machine] else None
            for _d, rec in recs
        }
        for _d, rec in recs:
            f = ready[rec.machine]
            st = "orphaned (lab up restarts it)" if system.cgroup_populated(rec.group, rec.machine) else "stopped"
            if running[rec.machine]:
                st = "ready" if f and f.result() else "running (no ssh)"
            rows.append(
                {"site": rec.site, "host": rec.host, "machine": rec.machine, "state": st, "address": rec.address}
            )
    order = {s.slug: i for i, s in enumerate(estate.sites)}
    rows.sort(key=lambda r: (order.get(r["site"], 999), r["host"]))
    return rows
