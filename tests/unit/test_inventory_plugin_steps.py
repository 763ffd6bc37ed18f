"""The inventory plugin's steps (issue 16 split _populate into them), each on the real model with
a recorder for the inventory: the derived values no other test looks at (a site's reverse
zones, an endpoint's DHCP client id, the control sources, the package upstream) and where a
host's connection variables come from."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT

from basisit.lab import plan as lab_plan
from basisit.validate import load_estate

spec = importlib.util.spec_from_file_location("basisit_inventory_plugin", ROOT / "plugins" / "inventory" / "basisit.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


@pytest.fixture(scope="module")
def estate():
    return load_estate(ROOT / "inventory")


def recorded(fn, *args) -> tuple[plugin._Recorder, dict]:
    rec = plugin._Recorder()
    fn(rec, *args)
    return rec, {(op[1], op[2]): op[3] for op in rec.ops if op[0] == "set_variable"}


def test_site_groups_and_reverse_zones(estate):
    nalbach = estate.site("nalbach")
    rec, var = recorded(plugin._add_site, nalbach, 7)
    groups = [op[1] for op in rec.ops if op[0] == "add_group"]
    assert groups == ["nalbach", "district_saarlouis", "wave_modell", f"size_{nalbach.size.lower()}"]
    assert ["add_child", "kommunen", "nalbach"] in rec.ops
    assert var[("nalbach", "basisit_standard_version")] == 7
    site = var[("nalbach", "basisit_site")]
    assert "hosts" not in site
    # nalbach's /22 block 10.160.168.0/22: four /24 reverse zones
    assert site["reverse_zones"] == [f"{n}.160.10.in-addr.arpa" for n in (168, 169, 170, 171)]
    rec, _ = recorded(plugin._add_site, estate.zentral, 7)
    assert [op[1] for op in rec.ops if op[0] == "add_group"] == ["zentral"]


def test_host_in_site_and_role_groups(estate):
    dc = next(h for h in estate.site("nalbach").hosts if h.name == "nalbach-dc1")
    rec, _ = recorded(plugin._add_host, dc, ["nalbach", "district_saarlouis"])
    added = [op[2] for op in rec.ops if op[0] == "add_host"]
    assert added[:2] == ["nalbach", "district_saarlouis"] and set(dc.roles) <= set(added)


def test_endpoint_dhcp_client_id_and_backend_vars(estate, tmp_path):
    ep = next(h for h in estate.site("nalbach").hosts if h.name == "nalbach-nal-ws-001")
    _, var = recorded(plugin._add_host_model_vars, estate, ep, str(tmp_path), None)
    asset = var[(ep.name, "basisit_host")]["asset"]
    tag = asset["asset_tag"]  # NAL-IT-1001: client id = 00 (type) + the tag's bytes
    assert asset["dhcp_client_id"] == "00:" + ":".join(f"{b:02x}" for b in tag.encode())
    assert asset["dhcp_client_id"].startswith("00:4e:41:4c:2d")  # "\0NAL-"
    assert var[(ep.name, "basisit_backend")] == "planned"
    assert var[(ep.name, "basisit_control_sources")] == []
    lab_facts = {"backend": "lab", "hosts": {}, "ssh": {}}
    _, var = recorded(plugin._add_host_model_vars, estate, ep, str(tmp_path), lab_facts)
    assert var[(ep.name, "basisit_backend")] == "lab"
    assert var[(ep.name, "basisit_control_sources")] == [f"{lab_plan.control_address(estate).ip}/32"]
    assert (ep.name, "basisit_package_upstream") not in var  # not a package proxy


def test_package_upstream_of_the_proxy(estate, tmp_path):
    proxy = next(h for h in estate.zentral.hosts if "package_proxy" in h.roles)
    lab_facts = {"backend": "lab", "hosts": {}, "ssh": {}}
    _, var = recorded(plugin._add_host_model_vars, estate, proxy, str(tmp_path), lab_facts)
    assert "basisit lab up" in var[(proxy.name, "basisit_package_upstream")]["missing"]
    path = lab_plan.upstream_record_path(tmp_path)
    path.parent.mkdir(parents=True)
    rec = {"url": "http://10.0.0.1:3142", "mirror": "http://m/debian", "security_mirror": "http://s/debian-security"}
    path.write_text(json.dumps(rec), encoding="utf-8")
    _, var = recorded(plugin._add_host_model_vars, estate, proxy, str(tmp_path), lab_facts)
    assert var[(proxy.name, "basisit_package_upstream")] == {
        "proxy": rec["url"],
        "mirror": rec["mirror"],
        "security_mirror": rec["security_mirror"],
    }
    _, var = recorded(plugin._add_host_model_vars, estate, proxy, str(tmp_path), {**lab_facts, "backend": "cloud"})
    assert var[(proxy.name, "basisit_package_upstream")] == {}


def test_connection_vars_from_facts(estate, tmp_path):
    site = estate.site("nalbach")
    gw, dc = (next(h for h in site.hosts if h.name == n) for n in ("nalbach-gw", "nalbach-dc1"))
    _, var = recorded(plugin._add_host_connection_vars, gw, None)
    assert var == {(gw.name, "ansible_host"): str(gw.address), (gw.name, "ansible_become"): False}
    facts = {
        "backend": "cloud",
        "hosts": {gw.name: {"ansible_host": "192.0.2.7", "ansible_port": 2222}},
        "ssh": {"user": "basisit", "private_key_file": "/k", "known_hosts_file": "/kh", "common_args": "-o A=b"},
    }
    _, var = recorded(plugin._add_host_connection_vars, gw, facts)
    assert var == {
        (gw.name, "ansible_host"): "192.0.2.7",
        (gw.name, "ansible_port"): 2222,
        (gw.name, "ansible_user"): "basisit",
        (gw.name, "ansible_become"): True,
        (gw.name, "ansible_ssh_private_key_file"): "/k",
        (gw.name, "ansible_ssh_common_args"): "-o A=b -o UserKnownHostsFile=/kh",
    }
    rec, var = recorded(plugin._add_host_connection_vars, dc, facts)  # the facts do not list it
    assert ["add_host", dc.name, "not_realised"] in rec.ops
    assert var == {(dc.name, "ansible_host"): str(dc.address)}
    facts["ssh"] = {"user": "root"}
    _, var = recorded(plugin._add_host_connection_vars, gw, facts)
    assert var[(gw.name, "ansible_become")] is False and (gw.name, "ansible_ssh_common_args") not in var


def test_global_vars(estate, tmp_path):
    _, var = recorded(plugin._add_global_vars, estate, "/inv", str(tmp_path))
    assert var[("all", "basisit_inventory_dir")] == "/inv" and var[("all", "basisit_state_dir")] == str(tmp_path)
    services = var[("all", "basisit_zentral_services")]
    assert [h["name"] for h in services["backup_server"]] == ["zentral-backup"]
