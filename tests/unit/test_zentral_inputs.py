"""The digest of zentral's converge inputs (basisit.zentral_inputs): it changes with what
zentral's roles consume and only with that."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import ROOT, edit

from basisit import zentral_inputs as zi
from basisit.validate import load_estate


@pytest.fixture
def setup(tmp_path, inv):
    """(inventory, state, digest()): the digest over the copy of the inventory and a state."""
    state = tmp_path / "state"
    state.mkdir()

    def digest() -> str:
        return zi.digest(load_estate(inv), inv, state)

    return inv, state, digest


def test_the_same_inputs_give_the_same_digest(setup):
    _, _, digest = setup
    assert digest() == digest()


def test_a_kommune_new_to_zentrals_rosters_changes_it(setup):
    inv, _, digest = setup
    bous = (inv / "kommunen" / "bous.yaml").read_text(encoding="utf-8")
    (inv / "kommunen" / "bous.yaml").unlink()
    without = digest()
    (inv / "kommunen" / "bous.yaml").write_text(bous, encoding="utf-8")
    with_bous = digest()
    assert with_bous != without
    doc = zi.document(load_estate(inv), inv, setup[1])
    peers = {p["kommune"] for p in doc["model"]["hosts"]["zentral-gw"]["vpn_peers"]}
    assert "bous" in peers and "bous" in doc["model"]["rosters"]["backup_client"]


def test_a_kommune_edit_zentral_does_not_consume_keeps_it(setup):
    inv, _, digest = setup
    before = digest()
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d["population"].update(count=d["population"]["count"] + 1))
    assert digest() == before
    edit(inv / "zentral.yaml", lambda d: d.update(name=d.get("name", "Zentral") + " (neu)"))
    assert digest() != before


def test_secrets_zentral_applies_change_it_others_do_not(setup):
    inv, state, digest = setup
    (state / "secrets" / "nalbach").mkdir(parents=True)
    (state / "secrets" / "zentral").mkdir(parents=True)
    first = digest()
    (state / "secrets" / "nalbach" / "ad-administrator").write_text("$ANSIBLE_VAULT;1.1;AES256\n01\n")
    assert digest() == first  # the Kommune's own: zentral never reads it
    (state / "secrets" / "nalbach" / "wireguard.key").write_text("$ANSIBLE_VAULT;1.1;AES256\n02\n")
    second = digest()
    assert second != first  # the hub's peer key
    (state / "secrets" / "zentral" / "restic-maintenance").write_text("$ANSIBLE_VAULT;1.1;AES256\n03\n")
    assert digest() != second
    doc = zi.document(load_estate(inv), inv, state)
    assert "02" not in json.dumps(doc["secrets"])  # digests, never contents
    assert set(doc["secrets"]) == {"nalbach/wireguard.key", "zentral/restic-maintenance"}


def test_zentral_rebuilt_or_its_facts_changed_change_it(setup):
    _, state, digest = setup
    kh = state / "lab" / "known_hosts"
    kh.parent.mkdir()
    kh.write_text("10.160.0.1,zentral-gw ssh-ed25519 AAAAold\n10.160.168.1,nalbach-gw ssh-ed25519 AAAAn\n")
    facts = {
        "site": "zentral",
        "generated": "2026-12-03T10:00:00+00:00",
        "hosts": {"zentral-gw": {"ansible_host": "10.160.0.1"}},
        "ssh": {"known_hosts_file": str(kh)},
    }
    (state / "facts").mkdir()
    (state / "facts" / "zentral.json").write_text(json.dumps(facts))
    first = digest()
    facts["generated"] = "2026-12-03T11:00:00+00:00"  # lab up rewrote them: same facts
    (state / "facts" / "zentral.json").write_text(json.dumps(facts))
    assert digest() == first
    kh.write_text(kh.read_text().replace("AAAAn", "AAAAother"))
    assert digest() == first  # a Kommune's host key is not zentral's
    kh.write_text(kh.read_text().replace("AAAAold", "AAAAnew"))
    assert digest() != first  # zentral-gw built anew: a new host key


def test_code_changes_it(tmp_path, inv):
    root = tmp_path / "root"
    (root / "roles" / "vpn_hub" / "defaults").mkdir(parents=True)
    role = root / "roles" / "vpn_hub" / "defaults" / "main.yml"
    role.write_text("vpn_hub_port: 51820\n")
    estate, state = load_estate(inv), tmp_path / "state"
    first = zi.digest(estate, inv, state, root)
    role.write_text("vpn_hub_port: 51821\n")
    assert zi.digest(estate, inv, state, root) != first
    assert any(k.startswith("roles/") for k in zi.code())
    assert any(k.startswith("basisit/") for k in zi.code()) and "ansible.cfg" in zi.code()


def test_every_per_site_secret_a_role_reads_is_covered():
    """Contract: a role that reads another site's secret (`secrets_dir ~ '/' ~ site ~ '/NAME'`,
    the zentral side) names a file in KOMMUNE_SECRETS, or the digest would miss its rotation."""
    pattern = re.compile(r"secrets_dir\s*~\s*'/'\s*~\s*[\w.]+\s*~\s*'/([\w.-]+)'")
    found = set()
    for f in (ROOT / "roles").rglob("*"):
        if f.is_file() and f.suffix in (".yml", ".yaml", ".j2"):
            found |= set(pattern.findall(f.read_text(encoding="utf-8")))
    assert found, "no per-site secret found: the pattern no longer matches the roles"
    assert found <= set(zi.KOMMUNE_SECRETS), sorted(found - set(zi.KOMMUNE_SECRETS))


def test_every_estate_roster_a_zentral_role_reads_is_covered():
    """Contract: a group a role on zentral reads across the estate (not narrowed to its own
    site with `intersect(groups[basisit_site.slug])`) is a roster in the digest."""
    plays = (ROOT / "playbooks" / "zentral.yml").read_text(encoding="utf-8")
    roles = set(re.findall(r"role:\s*([\w.]+)", plays)) | {"base"}
    found = set()
    for role in roles:
        for f in (ROOT / "roles" / role.split(".")[-1]).rglob("*"):
            if f.is_file() and f.suffix in (".yml", ".yaml", ".j2"):
                for line in f.read_text(encoding="utf-8").splitlines():
                    if "intersect(groups[basisit_site.slug]" not in line:
                        found |= set(re.findall(r"groups\['(\w+)'\]", line))
    assert found <= set(zi.ROSTER_ROLES), sorted(found - set(zi.ROSTER_ROLES))
    assert "backup_client" in found


def test_no_copy_of_the_repository_needed(tmp_path):
    """The code part reads the repository it runs from; a missing directory is simply empty."""
    assert zi.code(tmp_path) == {}
    shutil.copy(ROOT / "ansible.cfg", tmp_path / "ansible.cfg")
    assert list(zi.code(tmp_path)) == ["ansible.cfg"]
