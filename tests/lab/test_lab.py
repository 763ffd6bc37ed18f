"""The lab end to end: one model Kommune (nalbach), another small one (bous) and zentral.

Runs as root (`make lab-test`); real systemd-nspawn hosts, real SSH through the lab's routers.
Tests run in file order against one session lab; the last one takes it down and checks that
nothing of it is left.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from basisit.lab import names, plan, system
from basisit.model import AUTOMATION_USER

pytestmark = pytest.mark.lab


def _plans(lab):
    return [plan.site_plan(lab.estate, lab.estate.site(s), lab.prefix) for s in ["zentral", *lab.sites]]


def _hosts(lab):
    return [hp for sp in _plans(lab) for hp in sp.hosts]


def _one(lab, site: str, kind: str):
    return next(
        hp for hp in plan.site_plan(lab.estate, lab.estate.site(site), lab.prefix).hosts if hp.host.kind == kind
    )


def test_every_host_answers_ssh_at_its_model_address(lab):
    hosts = _hosts(lab)
    assert len(hosts) == 4 + 3 + 2  # zentral gw/mgmt/backup/log, nalbach gw/dc1/ep, bous gw/dc1
    for hp in hosts:
        p = lab.ssh(str(hp.host.address), "hostname; ip -4 -o addr show; systemd-detect-virt -c")
        assert p.returncode == 0, f"{hp.name}: {p.stderr}"
        lines = p.stdout.splitlines()
        assert lines[0] == hp.host.short
        assert lines[-1] == "systemd-nspawn"
        for zone, addr in hp.host.addresses.items():
            if zone != names.VPN_ZONE:
                assert f" {addr}/" in p.stdout, f"{hp.name} lacks {zone} address {addr}"


def test_hosts_are_distinct_machines(lab):
    ids = {}
    for hp in _hosts(lab):
        out = lab.ssh(
            str(hp.host.address), "cat /etc/machine-id; cat /etc/ssh/ssh_host_*_key.pub | wc -l"
        ).stdout.split()
        assert out[1] == "1", f"{hp.name}: expected exactly one (ed25519) host key"
        ids[hp.name] = out[0]
    assert len(set(ids.values())) == len(ids)


def test_site_facts_describe_what_runs(lab):
    from basisit import sitefacts

    for slug in ["zentral", *lab.sites]:
        doc = sitefacts.read(lab.state, slug)
        assert doc is not None and doc["backend"] == "lab"
        sitefacts.check_against_model(doc, lab.estate.site(slug))
        assert doc["ssh"]["user"] == AUTOMATION_USER
        assert Path(doc["ssh"]["private_key_file"]).stat().st_mode & 0o777 == 0o600
        assert Path(doc["ssh"]["known_hosts_file"]).is_file()


def test_client_zone_reaches_server_zone_only_through_the_gateway(lab):
    ep, dc, gw = _one(lab, "nalbach", "ep"), _one(lab, "nalbach", "dc"), _one(lab, "nalbach", "gw")
    gw_client = str(gw.host.addresses["client"])
    # different bridges: the endpoint and the DC share no layer-2 segment
    assert system.link_master(ep.nics[0].host_if) == names.bridge(lab.estate.site("nalbach"), "client", lab.prefix)
    assert system.link_master(dc.nics[0].host_if) == names.bridge(lab.estate.site("nalbach"), "server", lab.prefix)
    # the endpoint's only way out is the gateway's client address
    routes = lab.ssh(str(ep.host.address), "ip -4 -j route show").stdout
    gateways = {r.get("gateway") for r in json.loads(routes) if r.get("gateway")}
    assert gateways == {gw_client}
    via = lab.ssh(str(ep.host.address), f"ip -4 -j route get {dc.host.address}").stdout
    assert json.loads(via)[0]["gateway"] == gw_client
    probe = f"nc -z -w 2 {dc.host.address} 22"
    assert lab.ssh(str(ep.host.address), probe).returncode == 0
    # with the gateway's forwarding off, the endpoint no longer reaches the DC
    try:
        lab.ssh(str(gw.host.address), "sysctl -qw net.ipv4.ip_forward=0")
        assert lab.ssh(str(ep.host.address), probe).returncode != 0
    finally:
        lab.ssh(str(gw.host.address), "sysctl -qw net.ipv4.ip_forward=1")
    assert lab.ssh(str(ep.host.address), probe).returncode == 0


@pytest.mark.parametrize(("src_site", "src_kind", "dst_site"), [("nalbach", "ep", "bous"), ("bous", "dc", "nalbach")])
def test_no_path_between_kommunen(lab, src_site, src_kind, dst_site):
    src = _one(lab, src_site, src_kind)
    for kind in ("dc", "gw"):
        dst = _one(lab, dst_site, kind)
        p = lab.ssh(str(src.host.address), f"nc -z -w 2 {dst.host.address} 22")
        assert p.returncode != 0, f"{src.name} reaches {dst.name}"


def test_zentral_reaches_every_kommune(lab):
    mgmt = _one(lab, "zentral", "mgmt")
    for slug in lab.sites:
        dc = _one(lab, slug, "dc")
        assert lab.ssh(str(mgmt.host.address), f"nc -z -w 2 {dc.host.address} 22").returncode == 0


def test_guest_reboot_comes_back(lab):
    dc = _one(lab, "bous", "dc")
    addr = str(dc.host.address)
    before = lab.ssh(addr, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    lab.ssh(addr, "systemctl reboot", timeout=10)
    from basisit.lab import ssh, system

    def rebooted() -> bool:
        p = ssh.run(lab.state, addr, "cat /proc/sys/kernel/random/boot_id", timeout=5, connect_timeout=1)
        return p.returncode == 0 and p.stdout.strip() not in ("", before)

    system.poll(f"{dc.name} to boot again", rebooted, timeout=60, interval=0.3)


def test_status_lists_every_host_ready(lab):
    out = lab.cli("lab", "status").stdout
    for hp in _hosts(lab):
        assert re.search(rf"^\S+\s+{hp.name}\s+{hp.machine}\s+ready\s+{hp.host.address}\s*$", out, re.M), out


def test_up_completes_what_is_missing(lab):
    """A machine whose nspawn died (kill -9 leaves the guest running) is stopped cleanly and booted again."""
    import os
    import signal

    from basisit.lab import host

    dc = _one(lab, "bous", "dc")
    group = names.cgroup_group(lab.prefix)
    pid = host.nspawn_pid(group, dc.machine)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    system.poll(f"{dc.machine}'s nspawn to die", lambda: host.nspawn_pid(group, dc.machine) is None, timeout=10)
    assert re.search(rf"{dc.name}\s+{dc.machine}\s+orphaned", lab.cli("lab", "status").stdout)
    out = lab.cli("lab", "up", *[a for s in lab.sites for a in ("--kommune", s)]).stdout
    assert f"{dc.name}: started as {dc.machine}" in out
    assert out.count("started as") == 1, out
    assert lab.ssh(str(dc.host.address), "true").returncode == 0


def test_up_again_changes_nothing(lab):
    p = lab.cli("lab", "up", *[a for s in lab.sites for a in ("--kommune", s)])
    assert "nothing to change" in p.stdout, p.stdout
    assert "started" not in p.stdout


def test_a_stale_lab_is_taken_down_by_its_own_names(lab):
    """An interrupted session's lab (nothing of it runs) holding the machine does not block `lab up`."""
    from basisit.lab import lab as lablib

    stale = lab.state.parent / "stale-state"
    bridge = "bsz-m"  # zentral's management bridge of a lab with prefix bs
    rec = stale / "lab" / "sites" / "zentral.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(json.dumps({"site": "zentral", "bridges": [bridge], "machines": []}), encoding="utf-8")
    system.ensure_bridge(bridge)
    me = json.loads(lablib.OWNER_FILE.read_text(encoding="utf-8"))
    lablib.OWNER_FILE.write_text(json.dumps({"state": str(stale), "prefix": "bs"}), encoding="utf-8")
    try:
        assert not lablib.owner_active(lablib.owner())
        out = lab.cli("lab", "up", *[a for s in lab.sites for a in ("--kommune", s)]).stdout
        assert f"taking down the lab of {stale} (prefix bs)" in out, out
        assert not system.link_exists(bridge)
        assert not (stale / "lab" / "sites" / "zentral.json").exists()
        assert lablib.owner() == me
        # the stale lab's route clean-up left this lab routed (the fallback route is back)
        routes = system.run(["ip", "route", "show", "exact", str(plan.supernet(lab.estate))])
        assert "unreachable" in routes and "via" in routes, routes
    finally:
        system.delete_link(bridge)
        if lablib.owner() != me:
            lablib.OWNER_FILE.write_text(json.dumps(me), encoding="utf-8")
        shutil.rmtree(stale, ignore_errors=True)


def test_down_leaves_nothing(lab):
    lab.cli("lab", "down", "--all")
    machines = {hp.machine for hp in _hosts(lab)}
    links = set()
    for sp in _plans(lab):
        links |= set(sp.bridges.values()) | {n.host_if for hp in sp.hosts for n in hp.nics}
    links |= {plan.transfer_nic(lab.estate, lab.estate.site(s), lab.prefix).host_if for s in lab.sites}
    assert not [n for n in links if system.link_exists(n)]
    group = names.cgroup_group(lab.prefix)
    assert not any((system.CGROUP_ROOT / h / group).exists() for h in system.HIERARCHIES)
    procs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace") in {f"--machine={m}" for m in machines} for a in args):
            procs.append(cmdline.parent.name)
    assert not procs, f"lab processes left: {procs}"
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        assert not [line for line in fh if str(lab.state) in line.split()[4]]
    supernet = str(plan.supernet(lab.estate))
    assert system.run(["ip", "route", "show", "exact", supernet]).strip() == ""
    assert not list((lab.state / "facts").glob("*.json"))
