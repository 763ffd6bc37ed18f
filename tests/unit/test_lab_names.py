"""Lab names and plans for the whole estate: short enough, unique, and the routing rules hold."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest

from basisit.lab import image, names, plan
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]
ESTATE = load_estate(ROOT / "inventory")


def _all_names(pfx: str) -> tuple[list[str], list[str]]:
    """(machine names, interface names) of every site of the estate up at once."""
    machines, ifaces = [], []
    for site in ESTATE.sites:
        sp = plan.site_plan(ESTATE, site, pfx)
        ifaces += sp.bridges.values()
        for hp in sp.hosts:
            machines.append(hp.machine)
            ifaces += [n.host_if for n in hp.nics]
        if not site.is_zentral:
            ifaces.append(plan.transfer_nic(ESTATE, site, pfx).host_if)
    return machines, ifaces


@pytest.mark.parametrize("pfx", ["bi", "bt", "xyz"])
def test_every_name_fits_and_is_unique(pfx):
    machines, ifaces = _all_names(pfx)
    assert len(ESTATE.kommunen) == 52
    assert all(len(m) <= names.MACHINE_MAX for m in machines), max(machines, key=len)
    assert all(len(i) <= names.IFNAME_MAX for i in ifaces), max(ifaces, key=len)
    dupes = [n for n, c in Counter(machines + ifaces).items() if c > 1]
    assert not dupes
    # nspawn's own veth names (vb-<machine>) are among the interfaces, so none is hashed
    assert all(f"vb-{m}" in ifaces for m in machines if not m.endswith("-gw"))
    assert all(n.startswith(pfx) or n.startswith(f"vb-{pfx}") for n in machines + ifaces)


def test_two_prefixes_share_no_name():
    a, b = _all_names("bi"), _all_names("bt")
    assert not set(a[0] + a[1]) & set(b[0] + b[1])


def test_guest_interface_names_fit():
    for site in ESTATE.kommunen.values():
        assert len(plan.transfer_nic(ESTATE, site, "bi").guest_if) <= names.IFNAME_MAX
    for sp in (plan.site_plan(ESTATE, s, "bi") for s in ESTATE.sites):
        for hp in sp.hosts:
            assert all(len(n.guest_if) <= names.IFNAME_MAX for n in hp.nics)


def test_names_follow_net_index():
    nalbach = ESTATE.site("nalbach")
    sp = plan.site_plan(ESTATE, nalbach, "bi")
    assert {hp.machine for hp in sp.hosts} == {"bi42-gw", "bi42-dc1", "bi42-ep1"}
    assert sp.bridges == {"management": "bi42-m", "server": "bi42-s", "transfer": "bi42-t", "client": "bi42-c"}
    zp = plan.site_plan(ESTATE, ESTATE.zentral, "bi")
    assert zp.bridges == {"management": "biz-m", "services": "biz-s"}  # vpn is the WireGuard overlay


@pytest.mark.parametrize("bad", ["", "BI", "b1", "abcd", "b-"])
def test_bad_prefix_is_refused(monkeypatch, bad):
    monkeypatch.setenv(names.PREFIX_ENV, bad)
    with pytest.raises(names.LabNameError, match="lab prefix"):
        names.prefix()


def test_lab_realises_the_endpoint_cap():
    cap = ESTATE.standard.endpoints.lab_cap
    for site in ESTATE.kommunen.values():
        eps = [h for h in plan.lab_hosts(ESTATE, site) if h.kind == "ep"]
        assert len(eps) == min(cap, len([h for h in site.hosts if h.kind == "ep"]))


def test_kommune_gateway_routes_only_to_zentral():
    zentral_nets = {z.network for z in ESTATE.zentral.zones.values()}
    for site in ESTATE.kommunen.values():
        gw = next(hp for hp in plan.site_plan(ESTATE, site, "bi").hosts if hp.router)
        assert all(n.default_gateway is None for n in gw.nics), f"{site.slug}: the gateway has a default route"
        routes = [r for n in gw.nics for r in n.routes]
        assert {dest for dest, _ in routes} == zentral_nets
        assert {via for _, via in routes} == {site.zones["transfer"].gateway}


def test_zentral_routes_each_block_to_its_gateway():
    for site in ESTATE.kommunen.values():
        nic = plan.transfer_nic(ESTATE, site, "bi")
        assert nic.address.ip == site.zones["transfer"].gateway
        assert nic.routes == ((site.block, site.host("gw").addresses["transfer"]),)


def test_hosts_route_via_their_site_gateway():
    for site in ESTATE.sites:
        sp = plan.site_plan(ESTATE, site, "bi")
        gw = next(hp for hp in sp.hosts if hp.router)
        for hp in sp.hosts:
            if hp.router:
                continue
            (nic,) = hp.nics
            assert nic.default_gateway == gw.host.addresses[nic.zone]
            assert nic.address.ip == hp.host.address


def test_control_address_is_free_and_in_zentral_management():
    addr = plan.control_address(ESTATE)
    mgmt = ESTATE.zentral.zones["management"].network
    assert addr.ip in mgmt and addr.network == mgmt
    assert addr.ip not in {a for h in ESTATE.hosts() for a in h.addresses.values()}
    assert plan.supernet(ESTATE).supernet_of(ipaddress.IPv4Network(mgmt))


def test_networkd_file_of_a_gateway():
    gw = next(hp for hp in plan.site_plan(ESTATE, ESTATE.site("nalbach"), "bi").hosts if hp.router)
    files = plan.guest_files(gw)
    transfer = files["etc/systemd/network/10-basisit-transfer.network"]
    assert "Address=10.160.168.130/28" in transfer and "IPForward=ipv4" in transfer
    assert "Gateway=10.160.168.129" in transfer and "Destination=10.160.0.0/26" in transfer
    assert "\n[Network]\nAddress" in transfer and "Gateway=" not in transfer.split("[Route]")[0]


def test_mirrors_come_from_the_host_apt_sources(tmp_path, monkeypatch):
    monkeypatch.delenv(image.MIRROR_ENV, raising=False)
    monkeypatch.delenv(image.SECURITY_MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
        encoding="utf-8",
    )
    assert image.host_mirrors("bookworm", tmp_path) == (
        "http://mirror.example/debian",
        "http://sec.example/debian-security",
    )
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://m.example/debian bookworm main contrib\n")
    with pytest.raises(image.LabError, match="bookworm-security"):
        image.host_mirrors("bookworm", tmp_path)


def test_image_key_follows_the_package_list(tmp_path, monkeypatch):
    monkeypatch.setenv(image.MIRROR_ENV, "http://mirror.example/debian")
    monkeypatch.setenv(image.SECURITY_MIRROR_ENV, "http://sec.example/debian-security")
    spec = image.load_spec(ROOT / "inventory")
    assert "openssh-server" in spec.packages and "wireguard-tools" in spec.packages_no_recommends
    inv = tmp_path / "inventory"
    (inv / image.IMAGE_LIST).parent.mkdir(parents=True)
    text = (ROOT / "inventory" / image.IMAGE_LIST).read_text(encoding="utf-8")
    (inv / image.IMAGE_LIST).write_text(text, encoding="utf-8")
    assert image.load_spec(inv).key == spec.key
    (inv / image.IMAGE_LIST).write_text(text.replace("  - curl\n", "  - curl\n  - htop\n"), encoding="utf-8")
    assert image.load_spec(inv).key != spec.key
    (inv / image.IMAGE_LIST).write_text("basisit_image_packages: [Not a package]\n", encoding="utf-8")
    with pytest.raises(image.LabError, match="list of Debian package names"):
        image.load_spec(inv)


def test_every_lab_nic_counts_for_network_online():
    """A NIC with RequiredForOnline=no made systemd-networkd-wait-online wait out its 120 s timeout."""
    for sp in [plan.site_plan(ESTATE, ESTATE.site(s), "bi") for s in ("zentral", "nalbach")]:
        for hp in sp.hosts:
            for name, text in plan.guest_files(hp).items():
                if name.endswith(".network"):
                    assert "RequiredForOnline=routable" in text, (hp.name, name)
