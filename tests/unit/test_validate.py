"""`basisit inventory validate`: the shipped inventory is valid; every class of bad input is
reported with file, Kommune and field, exit status 2 and no traceback."""

from __future__ import annotations

import pytest
from conftest import edit

from basisit.validate import InventoryError, load_estate


def test_shipped_inventory_is_valid(run):
    rc, out, err = run("--inventory", "inventory", "inventory", "validate")
    assert rc == 0, err
    assert out.strip() == "52 Kommunen, 1 central site, 165 hosts, standard v1: valid"


def test_model_kommunen_are_in_wave_modell():
    estate = load_estate("inventory")
    assert sorted(s.slug for s in estate.wave("modell")) == ["bexbach", "mettlach", "nalbach", "tholey"]
    assert {s.kommune.ags for s in estate.wave("modell")} == {"10045111", "10042114", "10044113", "10046118"}


def _set(field, value):
    def change(d):
        keys = field.split(".")
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


def _del(field):
    def change(d):
        del d[field]

    return change


def _add_endpoint(**ep):
    base = {"hostname": "ws-x", "index": 9, "asset_tag": "T-9", "department": "Bauamt", "os": "debian-12"}

    def change(d):
        d.setdefault("endpoints", []).append({**base, **ep})

    return change


CASES = {
    # name: (file, change, expected Kommune, expected field, words in the message)
    "missing-field": ("nalbach", _del("ags"), "nalbach", "ags", "required field is missing"),
    "unknown-field": ("nalbach", _set("colour", "blue"), "nalbach", "colour", "unknown field"),
    "wrong-type": ("nalbach", _set("net_index", "zwölf"), "nalbach", "net_index", "valid integer"),
    "ags-not-8-digits": ("nalbach", _set("ags", "1004411"), "nalbach", "ags", "not 8 digits"),
    "ags-not-saarland": ("nalbach", _set("ags", "09162000"), "nalbach", "ags", "not a Saarland code"),
    "duplicate-ags": ("nalbach", _set("ags", "10045111"), "nalbach", "ags", "duplicate ags"),
    "duplicate-net-index": ("nalbach", _set("net_index", 53), "nalbach", "net_index", "duplicate net_index"),
    "duplicate-ad-domain": (
        "nalbach",
        _set("ad_domain", "bexbach.basisit.internal"),
        "nalbach",
        "ad_domain",
        "duplicate ad_domain",
    ),
    "duplicate-netbios": ("nalbach", _set("netbios", "BEXBACH"), "nalbach", "netbios", "duplicate netbios"),
    "netbios-too-long": ("nalbach", _set("netbios", "NALBACHSAARLOUIS1"), "nalbach", "netbios", "1-15"),
    "net-index-out-of-range": ("nalbach", _set("net_index", 4096), "nalbach", "net_index", "out of range"),
    "no-tunnel-address": ("nalbach", _set("net_index", 1023), "nalbach", "net_index", "no tunnel address"),
    "overlaps-zentral": ("nalbach", _set("net_index", 1), "nalbach", "net_index", "overlaps the zentral zone vpn"),
    "invalid-hostname": (
        "nalbach",
        _add_endpoint(hostname="Bad_Host!"),
        "nalbach",
        "endpoints[2].hostname",
        "not a valid hostname",
    ),
    "duplicate-endpoint": (
        "nalbach",
        _add_endpoint(hostname="nal-ws-001"),
        "nalbach",
        "endpoints[2].hostname",
        "duplicate endpoint hostname",
    ),
    "unknown-wave": ("nalbach", _set("wave", 99), "nalbach", "wave", "unknown wave"),
    "unknown-size": ("nalbach", _set("size", "XL"), "nalbach", "size", "unknown size class"),
    "negative-population": ("nalbach", _set("population.count", -5), "nalbach", "population.count", "negative"),
    "bad-ad-domain": (
        "nalbach",
        _set("ad_domain", "Nalbach..internal"),
        "nalbach",
        "ad_domain",
        "not a valid DNS domain",
    ),
    "district-mismatch": ("nalbach", _set("district", "St. Wendel"), "nalbach", "district", "does not match"),
    "unknown-role": (
        "standard",
        _set("host_kinds.dc.roles", ["ad_dc", "mailserver"]),
        "standard",
        "host_kinds.dc.roles",
        "unknown role",
    ),
    # Admins' sudo skips the password only with a reason (issue 12).
    "admin-sudo-nopasswd-without-reason": (
        "standard",
        _set("access", {"admin_sudo": {"nopasswd": True}}),
        "standard",
        "access.admin_sudo.reason",
        "say why",
    ),
    "admin-sudo-nopasswd-blank-reason": (
        "standard",
        _set("access", {"admin_sudo": {"nopasswd": True, "reason": "  "}}),
        "standard",
        "access.admin_sudo.reason",
        "say why",
    ),
    "admin-sudo-reason-without-nopasswd": (
        "standard",
        _set("access", {"admin_sudo": {"nopasswd": False, "reason": "habit"}}),
        "standard",
        "access.admin_sudo.reason",
        "nothing to justify",
    ),
    "admin-sudo-nopasswd-not-a-bool": (
        "standard",
        _set("access", {"admin_sudo": {"nopasswd": "yes", "reason": "x"}}),
        "standard",
        "access.admin_sudo.nopasswd",
        "valid boolean",
    ),
    "admin-sudo-unknown-field": (
        "standard",
        _set("access", {"admin_sudo": {"nopasswd": False, "passwordless": True}}),
        "standard",
        "access.admin_sudo.passwordless",
        "unknown field",
    ),
}


def test_admin_sudo_reauthenticates_unless_the_standard_says_otherwise_with_a_reason(inv):
    assert load_estate("inventory").standard.access.admin_sudo.nopasswd is False  # the shipped standard
    edit(inv / "standard.yaml", _set("access", {"admin_sudo": {"nopasswd": True, "reason": "Notbetrieb bis 2027"}}))
    sudo = load_estate(inv).standard.access.admin_sudo
    assert sudo.nopasswd is True and sudo.reason == "Notbetrieb bis 2027"
    edit(inv / "standard.yaml", lambda d: d.pop("access"))
    assert load_estate(inv).standard.access.admin_sudo.nopasswd is False  # absent: re-authenticate


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_with_file_kommune_field(case, inv, run):
    name, change, kommune, field, words = CASES[case]
    path = inv / ("standard.yaml" if name == "standard" else f"kommunen/{name}.yaml")
    edit(path, change)
    rc, out, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if f"[{kommune}] {field}:" in ln]
    assert lines, err
    assert str(path) in lines[0]
    assert words in lines[0]
    assert err.rstrip().endswith("nothing was applied")


def test_yaml_syntax_error_names_the_line(inv, run):
    path = inv / "kommunen" / "tholey.yaml"
    text = path.read_text(encoding="utf-8").splitlines()
    text[4] = "kind: [Gemeinde"  # line 5
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    rc, _, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert f"{path}:5: [tholey] -: YAML syntax error at line 5" in err
    assert "Traceback" not in err


def test_duplicate_slug(inv, run):
    path = inv / "kommunen" / "nalbach-copy.yaml"
    path.write_text((inv / "kommunen" / "nalbach.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    rc, _, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert f"{path}:2: [nalbach-copy] slug: 'nalbach' does not match the file name" in err
    assert "duplicate slug 'nalbach'" in err


def test_every_error_is_listed_at_once(inv, run):
    edit(inv / "kommunen" / "nalbach.yaml", _set("ags", "123"))
    edit(inv / "kommunen" / "tholey.yaml", _set("population", {"count": -1, "date": "2024-12-31"}))
    edit(inv / "kommunen" / "bexbach.yaml", _del("netbios"))
    rc, _, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert "[nalbach] ags:" in err and "[tholey] population.count:" in err and "[bexbach] netbios:" in err
    assert "3 error(s)" in err


def test_zones_overlapping_inside_zentral(inv, run):
    edit(inv / "zentral.yaml", _set("zones.services.cidr", "10.160.0.0/25"))
    rc, _, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert "[zentral] zones.services.cidr: 10.160.0.0/25 overlaps zone management" in err


def test_missing_inventory_directory(tmp_path, run):
    rc, _, err = run("--inventory", tmp_path / "nope", "inventory", "validate")
    assert rc == 2
    assert "inventory directory not found" in err


def test_load_estate_raises_only_inventory_error(inv):
    (inv / "standard.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(InventoryError) as e:
        load_estate(inv)
    assert "top level is list" in e.value.report()


def test_allow_rule_naming_unknown_zentral_target(inv, run):
    def change(d):
        d["allow"][0]["to"] = "zentral:mailserver"

    edit(inv / "standard.yaml", change)
    rc, _, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2
    assert f"{inv / 'standard.yaml'}:" in err
    assert ": [standard] allow[0].to: unknown zentral role or zone 'mailserver'" in err


def test_zentral_mgmt_host_may_ssh_everywhere():
    """The Ansible controller and the nightly verify run on zentral's management host."""
    from basisit import policy

    estate = load_estate("inventory")
    site = estate.kommunen["nalbach"]
    [mgmt] = estate.zentral.hosts_with_role("mgmt_host")
    for host in site.hosts:
        assert policy.allowed(estate, site, mgmt.address, host.address, "tcp", 22), host.name
    assert not policy.allowed(estate, site, mgmt.address, site.host("dc1").address, "tcp", 445)
