"""The Ansible inventory plugin: `ansible-inventory -i inventory --list` shows the estate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, edit

from basisit import sitefacts
from basisit.validate import load_estate

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def _plain(value):
    """ansible-inventory marks plugin-provided strings as unsafe ({"__ansible_unsafe": ...})."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def inventory_list(state: Path, inventory: Path = ROOT / "inventory") -> dict:
    env = {**os.environ, "BASISIT_STATE": str(state), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    p = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", inventory, "--list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "WARNING" not in p.stderr, p.stderr
    return _plain(json.loads(p.stdout))


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict:
    return inventory_list(tmp_path_factory.mktemp("state"))


def test_lists_the_model_kommunen_with_hosts_and_addresses(planned):
    hv = planned["_meta"]["hostvars"]
    for slug, dc in [("bexbach", "10.160.212.74"), ("mettlach", None), ("nalbach", "10.160.168.74"), ("tholey", None)]:
        hosts = planned[slug]["hosts"]
        assert f"{slug}-gw" in hosts and f"{slug}-dc1" in hosts
        assert hv[f"{slug}-dc1"]["basisit_site"]["slug"] == slug
        if dc:
            assert hv[f"{slug}-dc1"]["ansible_host"] == dc
    assert sorted(planned["wave_modell"]["hosts"]) == sorted(
        h for s in ("bexbach", "mettlach", "nalbach", "tholey") for h in planned[s]["hosts"]
    )


def test_groups_per_district_role_size_and_zentral(planned):
    assert "nalbach-dc1" in planned["district_saarlouis"]["hosts"]
    assert "nalbach-dc1" in planned["ad_dc"]["hosts"] and "nalbach-gw" in planned["gateway"]["hosts"]
    assert "nalbach-nal-ws-001" in planned["endpoint"]["hosts"]
    assert "saarbruecken-dc2" in planned["size_l"]["hosts"]
    assert sorted(planned["zentral"]["hosts"]) == ["zentral-backup", "zentral-gw", "zentral-log", "zentral-mgmt"]
    assert "zentral-backup" in planned["backup_server"]["hosts"]
    assert len(planned["kommunen"]["children"]) == 52
    hv = planned["_meta"]["hostvars"]["nalbach-gw"]
    assert hv["basisit_host"]["addresses"]["client"] == "10.160.170.1"
    assert hv["basisit_standard"]["version"] == 1


def test_ansible_host_comes_from_site_facts(tmp_path):
    site = load_estate(ROOT / "inventory").kommunen["nalbach"]
    hosts = {
        "nalbach-gw": {
            "roles": ["gateway"],
            "addresses": {"management": "10.160.168.1"},
            "ansible_host": "10.160.168.2",
        },
        "nalbach-dc1": {"roles": ["ad_dc"], "addresses": {"server": "10.160.168.74"}, "ansible_host": "10.160.168.74"},
    }
    ssh = {"user": "root", "private_key_file": "/k/id", "known_hosts_file": "/k/kh"}
    sitefacts.write(tmp_path, sitefacts.build(site, "lab", 1, hosts, ssh))
    data = inventory_list(tmp_path)
    hv = data["_meta"]["hostvars"]
    assert hv["nalbach-gw"]["ansible_host"] == "10.160.168.2"
    assert hv["nalbach-gw"]["ansible_ssh_private_key_file"] == "/k/id"
    assert "UserKnownHostsFile=/k/kh" in hv["nalbach-gw"]["ansible_ssh_common_args"]
    assert hv["nalbach-gw"]["basisit_backend"] == "lab"
    # the endpoints were not realised: visible, but in not_realised
    assert "nalbach-nal-ws-001" in data["not_realised"]["hosts"]
    # other sites keep their planned addresses
    assert hv["bexbach-dc1"]["ansible_host"] == "10.160.212.74"


def test_invalid_inventory_fails_with_the_report(tmp_path, inv):
    (inv / "kommunen" / "nalbach.yaml").write_text("ags: [\n", encoding="utf-8")
    (inv / "basisit.yml").write_text("plugin: basisit\n", encoding="utf-8")
    env = {**os.environ, "BASISIT_STATE": str(tmp_path), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    p = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", inv / "basisit.yml", "--list"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode != 0  # the run fails: never 0 hosts and a warning
    assert "[nalbach] -: YAML syntax error at line 2" in p.stderr
    assert "basisit inventory validate" in p.stderr
    assert "nalbach" not in p.stdout


def test_invalid_inventory_fails_a_directory_source_too(tmp_path, inv):
    """`-i inventory` (the directory, as the README shows) fails as well, for a rule error."""
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(ad_domain="nalbach.example.org"))
    (inv / "basisit.yml").write_text("plugin: basisit\n", encoding="utf-8")
    env = {**os.environ, "BASISIT_STATE": str(tmp_path), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    p = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", inv, "--graph"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode != 0
    assert "[nalbach] ad_domain:" in p.stderr and "basisit inventory validate --inventory" in p.stderr
    assert "@kommunen" not in p.stdout


def test_the_vpn_hub_knows_every_kommune_gateway_as_a_peer(planned):
    """One peer per Kommune, at its tunnel address (vpn zone + net_index), before any site is up."""
    hv = planned["_meta"]["hostvars"]
    peers = hv["zentral-gw"]["basisit_vpn_peers"]
    estate = load_estate(ROOT / "inventory")
    assert {p["kommune"] for p in peers} == set(estate.kommunen)
    nalbach = next(p for p in peers if p["kommune"] == "nalbach")
    assert nalbach == {"kommune": "nalbach", "address": "10.160.4.42", "gateway": "nalbach-gw"}
    assert len({p["address"] for p in peers}) == len(peers)
    hub = hv["nalbach-gw"]["basisit_zentral_services"]["vpn_hub"]
    assert hub == [
        {
            "name": "zentral-gw",
            "address": "10.160.0.1",
            "addresses": {"management": "10.160.0.1", "services": "10.160.0.65", "vpn": "10.160.4.1"},
        }
    ]
    # the underlay: the site's transfer link may reach the hub's WireGuard port, nothing else new
    rule = next(r for r in hv["zentral-gw"]["basisit_firewall_inbound"] if r["rule"] == "site-vpn")
    assert rule["proto"] == "udp" and rule["ports"] == [51820]
    assert "10.160.168.128/28" in rule["src"] and len(rule["src"]) == len(estate.kommunen)
