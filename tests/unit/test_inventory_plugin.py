"""The Ansible inventory plugin: `ansible-inventory -i inventory --list` shows the estate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, edit

from basisit import derived, sitefacts
from basisit.model import AUTOMATION_USER
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


@pytest.fixture
def planned(planned_listing) -> dict:
    return planned_listing


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
    assert hv["nalbach-gw"]["ansible_user"] == "root" and hv["nalbach-gw"]["ansible_become"] is False


def test_the_automation_account_connects_with_sudo(tmp_path):
    site = load_estate(ROOT / "inventory").kommunen["nalbach"]
    hosts = {
        "nalbach-dc1": {"roles": ["ad_dc"], "addresses": {"server": "10.160.168.74"}, "ansible_host": "10.160.168.74"}
    }
    sitefacts.write(tmp_path, sitefacts.build(site, "lab", 1, hosts, {"user": AUTOMATION_USER}))
    hv = inventory_list(tmp_path)["_meta"]["hostvars"]
    assert hv["nalbach-dc1"]["ansible_user"] == AUTOMATION_USER and hv["nalbach-dc1"]["ansible_become"] is True
    assert hv["nalbach-dc1"]["basisit_automation_user"] == AUTOMATION_USER  # base keeps this account


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
    estate = load_estate(ROOT / "inventory")
    # computed by the model where the vpn_hub role asks (lookup basisit_model), not a hostvar
    assert "basisit_vpn_peers" not in hv["zentral-gw"]
    peers = derived.value(hv["zentral-gw"]["basisit_inventory_dir"], "vpn_peers", "zentral-gw")
    assert {p["kommune"] for p in peers} == set(estate.kommunen)
    nalbach = next(p for p in peers if p["kommune"] == "nalbach")
    assert nalbach == {
        "kommune": "nalbach",
        "address": "10.160.4.42",
        "block": "10.160.168.0/22",
        "gateway": "nalbach-gw",
    }
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
    inbound = derived.value(hv["zentral-gw"]["basisit_inventory_dir"], "firewall_inbound", "zentral-gw")
    rule = next(r for r in inbound if r["rule"] == "site-vpn")
    assert rule["proto"] == "udp" and rule["ports"] == [51820]
    assert "10.160.168.128/28" in rule["src"] and len(rule["src"]) == len(estate.kommunen)


def _source(inv: Path, text: str) -> Path:
    """An inventory source beside the model files (basisit.yml is validated with them)."""
    (inv / "basisit.yml").write_text(text, encoding="utf-8")
    return inv / "basisit.yml"


def test_constructable_keyed_groups_composed_vars_and_groups(tmp_path, inv):
    """compose, groups and keyed_groups see each host's vars and its site group's basisit_site."""
    src = _source(
        inv,
        "plugin: egosaar.basisit.basisit\n"
        "strict: false\n"  # hosts without an asset have no os: no os_ group, no error
        "compose:\n"
        "  basisit_kommune: basisit_site.slug\n"
        "  dc_address: basisit_host.address if 'ad_dc' in basisit_roles else omit\n"
        "keyed_groups:\n"
        "  - key: basisit_site.size | lower\n"
        "    prefix: class\n"
        "  - key: basisit_host.asset.os | default('')\n"
        "    prefix: os\n"
        "groups:\n"
        "  saarlouis_dcs: \"'ad_dc' in basisit_roles and basisit_site.district == 'Saarlouis'\"\n",
    )
    data = inventory_list(tmp_path / "state", src)
    hv = data["_meta"]["hostvars"]
    assert hv["nalbach-gw"]["basisit_kommune"] == "nalbach"
    assert hv["zentral-gw"]["basisit_kommune"] == "zentral"
    assert hv["nalbach-dc1"]["dc_address"] == "10.160.168.74" and "dc_address" not in hv["nalbach-gw"]
    assert sorted(data["class_l"]["hosts"]) == sorted(data["size_l"]["hosts"])
    assert "nalbach-nal-ws-001" in data["os_debian_12"]["hosts"] and "nalbach-gw" not in data["os_debian_12"]["hosts"]
    estate = load_estate(inv)
    assert sorted(data["saarlouis_dcs"]["hosts"]) == sorted(
        h.name
        for k in estate.kommunen.values()
        if k.kommune.district == "Saarlouis"
        for h in k.hosts_with_role("ad_dc")
    )
    # the plugin's own groups are unchanged by the constructed ones
    assert "nalbach-dc1" in data["nalbach"]["hosts"] and len(data["kommunen"]["children"]) == 52


def test_constructable_strict_fails_on_an_undefined_variable(tmp_path, inv):
    src = _source(inv, "plugin: basisit\nstrict: true\ncompose:\n  x: basisit_no_such_var.y\n")
    env = {**os.environ, "BASISIT_STATE": str(tmp_path), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    p = subprocess.run([ANSIBLE_INVENTORY, "-i", src, "--list"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "basisit_no_such_var" in p.stderr


_LOADER_READY: list[bool] = []  # init_plugin_loader configures the process once


@pytest.fixture
def plugin_calls(monkeypatch):
    """Parse a source in-process with the plugin; counts how often the model is loaded."""
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader, inventory_loader

    if not _LOADER_READY:
        init_plugin_loader()  # as the ansible CLIs do: ansible.builtin.* (the jsonfile cache) resolves
        inventory_loader.add_directory(str(ROOT / "plugins" / "inventory"))
        _LOADER_READY.append(True)
    module = sys.modules[type(inventory_loader.get("basisit")).__module__]
    loads: list[str] = []
    real = module.load_estate

    def counting(path):
        loads.append(str(path))
        return real(path)

    monkeypatch.setattr(module, "load_estate", counting)

    def parse(src: Path, cache: bool = True) -> InventoryData:
        plugin = inventory_loader.get("basisit")
        data = InventoryData()
        plugin.parse(data, DataLoader(), str(src), cache=cache)
        plugin.update_cache_if_changed()  # as ansible's InventoryManager does after parse
        return data

    return parse, loads


def test_cache_hit_does_not_reload_the_model_and_an_edit_invalidates_it(tmp_path, inv, plugin_calls, monkeypatch):
    parse, loads = plugin_calls
    monkeypatch.setattr(_plugin_module(), "_inventory_cli", lambda: True)  # as in ansible-inventory
    cache_dir = tmp_path / "cache"
    src = _source(
        inv,
        f"plugin: basisit\nstate_dir: {tmp_path / 'state'}\n"
        f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache_dir}\n"
        "keyed_groups:\n  - key: basisit_site.wave\n    prefix: w\n",
    )
    first = parse(src)
    assert len(loads) == 1 and len(list(cache_dir.iterdir())) == 1
    # a new plugin instance (a new ansible run): served from the jsonfile cache, the model not loaded
    second = parse(src)
    assert len(loads) == 1
    assert set(second.hosts) == set(first.hosts) and set(second.groups) == set(first.groups)
    assert second.hosts["nalbach-dc1"].vars["basisit_host"] == first.hosts["nalbach-dc1"].vars["basisit_host"]
    assert "nalbach-dc1" in {h.name for h in second.groups["w_modell"].get_hosts()}  # constructed on a hit too
    # --flush-cache (cache=False) reloads
    parse(src, cache=False)
    assert len(loads) == 2
    # an edit to a Kommune file is a miss: reloaded, and the change is seen
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(name="Nalbach (Saar)"))
    third = parse(src)
    assert len(loads) == 3
    assert third.groups["nalbach"].vars["basisit_site"]["name"] == "Nalbach (Saar)"
    parse(src)
    assert len(loads) == 3
    # new site facts are a miss too: the addresses come from them
    site = load_estate(inv).kommunen["nalbach"]
    hosts = {
        "nalbach-dc1": {"roles": ["ad_dc"], "addresses": {"server": "10.160.168.74"}, "ansible_host": "10.160.168.74"}
    }
    sitefacts.write(tmp_path / "state", sitefacts.build(site, "lab", 1, hosts, {"user": "root"}))
    fourth = parse(src)
    assert len(loads) == 4
    assert fourth.hosts["nalbach-dc1"].vars["basisit_backend"] == "lab"


def test_an_invalid_inventory_is_never_served_from_the_cache(tmp_path, inv, plugin_calls):
    from ansible.errors import AnsibleParserError

    parse, loads = plugin_calls
    src = _source(
        inv,
        f"plugin: basisit\nstate_dir: {tmp_path / 'state'}\n"
        f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {tmp_path / 'cache'}\n",
    )
    parse(src)
    (inv / "kommunen" / "nalbach.yaml").write_text("ags: [\n", encoding="utf-8")
    with pytest.raises(AnsibleParserError, match="basisit inventory validate"):
        parse(src)
    assert len(loads) == 2


def test_a_named_source_outside_the_model_directory(tmp_path, inv):
    """`<name>.basisit.yml` anywhere (an AWX source among others), inventory_dir at the model."""
    src = tmp_path / "sources" / "estate.basisit.yml"
    src.parent.mkdir()
    src.write_text(f"plugin: egosaar.basisit.basisit\ninventory_dir: {inv}\n", encoding="utf-8")
    data = inventory_list(tmp_path / "state", src)
    assert "nalbach-dc1" in data["nalbach"]["hosts"] and len(data["kommunen"]["children"]) == 52


def _plugin_module():
    from ansible.plugins.loader import inventory_loader

    return sys.modules[type(inventory_loader.get("basisit")).__module__]


def _cli(inv: Path, state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BASISIT_STATE": str(state), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run(
        [ANSIBLE_INVENTORY, "-i", inv / "basisit.yml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _with_group_vars(inv: Path, source: str) -> None:
    shutil.copytree(ROOT / "inventory" / "group_vars", inv / "group_vars")
    (inv / "basisit.yml").write_text(source, encoding="utf-8")


def test_the_cached_list_is_the_uncached_one_and_an_edit_invalidates_it(tmp_path, inv):
    """The repository's basisit.yml (cache on, in the state directory): `--list` prints byte for
    byte what the plugin prints without a cache, on the miss and on the hit; the hit is served
    from the cache file; an edited Kommune file is a miss and replaces the old entry."""
    state = tmp_path / "state"
    _with_group_vars(inv, "plugin: basisit\n")
    uncached = _cli(inv, state, "--list")
    assert uncached.returncode == 0, uncached.stderr
    assert not (state / "cache").exists()
    (inv / "basisit.yml").write_text((ROOT / "inventory" / "basisit.yml").read_text(encoding="utf-8"))
    miss = _cli(inv, state, "--list")
    entries = list((state / "cache" / "inventory").iterdir())
    hit = _cli(inv, state, "--list")
    assert miss.returncode == hit.returncode == 0, miss.stderr + hit.stderr
    assert "WARNING" not in miss.stderr + hit.stderr
    assert miss.stdout == uncached.stdout and hit.stdout == uncached.stdout
    assert len(entries) == 1
    # the hit came from the file: what is written there is what is listed
    entries[0].write_bytes(entries[0].read_bytes().replace(b"Nalbach", b"Nalbaxx"))
    served = _cli(inv, state, "--list")
    assert "Nalbaxx" in served.stdout and '"Nalbach"' not in served.stdout
    # an edited Kommune file misses: the edit is listed, the old entry is replaced
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(name="Nalbach (Saar)"))
    edited = _cli(inv, state, "--list")
    assert edited.returncode == 0, edited.stderr
    listed = json.loads(edited.stdout)["_meta"]["hostvars"]["nalbach-dc1"]["basisit_site"]["name"]
    assert _plain(listed) == "Nalbach (Saar)" and "Nalbaxx" not in edited.stdout
    assert [p.name for p in (state / "cache" / "inventory").iterdir()] != [entries[0].name]
    assert len(list((state / "cache" / "inventory").iterdir())) == 1


def test_a_cached_inventory_made_invalid_fails_with_the_same_report(tmp_path, inv):
    """The cache never hides a validation error: after a cached run, a broken Kommune file fails
    `ansible-inventory` with the report an uncached run gives."""
    state = tmp_path / "state"
    _with_group_vars(inv, (ROOT / "inventory" / "basisit.yml").read_text(encoding="utf-8"))
    assert _cli(inv, state, "--graph").returncode == 0
    assert list((state / "cache" / "inventory").iterdir())
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(ad_domain="nalbach.example.org"))
    cached = _cli(inv, state, "--graph")
    (inv / "basisit.yml").write_text("plugin: basisit\n", encoding="utf-8")
    uncached = _cli(inv, state, "--graph")
    assert cached.returncode != 0 and uncached.returncode != 0
    assert "[nalbach] ad_domain:" in cached.stderr and "basisit inventory validate --inventory" in cached.stderr
    report = [ln for ln in cached.stderr.splitlines() if "[nalbach]" in ln]
    assert report and report == [ln for ln in uncached.stderr.splitlines() if "[nalbach]" in ln]
    assert "@kommunen" not in cached.stdout


def test_the_cache_key_covers_inputs_and_code(tmp_path, inv):
    """A changed inventory file, site-facts file or code file changes the key; the default code
    is the basisit package (validation, model, policy) and the plugin itself."""
    module = _plugin_module()
    state = tmp_path / "state"
    (state / "facts").mkdir(parents=True)
    code = tmp_path / "code.py"
    code.write_text("x = 1\n", encoding="utf-8")

    def key() -> str:
        return module.cache_fingerprint(str(inv), str(state), [code])

    first = key()
    assert key() == first
    code.write_text("x = 2\n", encoding="utf-8")
    second = key()
    assert second != first
    (state / "facts" / "nalbach.json").write_text("{}", encoding="utf-8")
    third = key()
    assert third != second
    (inv / "waivers.yaml").write_text("# nothing waived\n", encoding="utf-8")
    assert key() != third
    names = {p.name for p in module.code_files()}
    assert {"basisit.py", "validate.py", "model.py", "policy.py", "load.py"} <= names
    assert not any(p.suffix == ".pyc" for p in module.code_files())


def test_no_cache_when_the_state_directory_cannot_hold_one(tmp_path, inv):
    """The default cache directory is under the state directory; if it cannot be made there, the
    inventory is still listed (without a cache), not failed."""
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file\n", encoding="utf-8")
    _with_group_vars(inv, (ROOT / "inventory" / "basisit.yml").read_text(encoding="utf-8"))
    p = _cli(inv, not_a_dir, "--graph")
    assert p.returncode == 0, p.stderr
    assert "@nalbach" in p.stdout


def test_a_playbook_hit_keeps_the_estate_for_the_lookups(tmp_path, inv, plugin_calls, monkeypatch):
    """In a playbook (not ansible-inventory) a hit still loads the estate into basisit.derived,
    before the workers fork, so lookup('basisit_model') never loads it per task; it does not
    rebuild the inventory (no _populate)."""
    parse, loads = plugin_calls
    module = _plugin_module()
    monkeypatch.setattr(module, "_inventory_cli", lambda: False)
    populated: list[int] = []
    real = module.InventoryModule._populate

    def counting(self, *a, **k):
        populated.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(module.InventoryModule, "_populate", counting)
    src = _source(
        inv,
        f"plugin: basisit\nstate_dir: {tmp_path / 'state'}\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n",
    )
    parse(src)
    derived._ESTATES.clear()
    parse(src)
    assert len(populated) == 1 and len(loads) == 2
    assert str(inv) in derived._ESTATES
    assert list((tmp_path / "state" / "cache" / "inventory").iterdir())
