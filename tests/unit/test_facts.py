"""Site facts: schema, model check, and `basisit facts import`."""

from __future__ import annotations

import json

import pytest

from basisit import sitefacts
from basisit.validate import load_estate

SITE = load_estate("inventory").kommunen["tholey"]


def _doc(**over):
    hosts = {
        h.name: {
            "roles": list(h.roles),
            "addresses": {z: str(a) for z, a in h.addresses.items()},
            "ansible_host": str(h.address),
        }
        for h in SITE.hosts
        if h.kind != "ep"
    }
    doc = sitefacts.build(SITE, "cloud", 1, hosts)
    doc.update(over)
    return doc


def test_built_facts_validate_and_match_the_model():
    doc = _doc()
    sitefacts.validate(doc)
    sitefacts.check_against_model(doc, SITE)


def test_schema_rejects_unknown_backend_and_missing_fields():
    with pytest.raises(sitefacts.FactsError, match="backend"):
        sitefacts.validate(_doc(backend="vmware"))
    doc = _doc()
    del doc["hosts"]
    with pytest.raises(sitefacts.FactsError, match="'hosts' is a required property"):
        sitefacts.validate(doc)


def test_model_check_catches_a_wrong_address():
    doc = _doc()
    doc["hosts"]["tholey-dc1"]["addresses"]["server"] = "10.9.9.9"
    with pytest.raises(sitefacts.FactsError, match=r"tholey-dc1/addresses/server: 10\.9\.9\.9 differs"):
        sitefacts.check_against_model(doc, SITE)


def test_facts_import_from_pulumi_output(tmp_path, run):
    out = tmp_path / "out.json"
    out.write_text(json.dumps({"site_facts": _doc(), "project_id": "abc"}), encoding="utf-8")
    rc, _, err = run("--state", tmp_path / "state", "facts", "import", "--kommune", "tholey", out)
    assert rc == 0, err
    written = tmp_path / "state" / "facts" / "tholey.json"
    assert (written.stat().st_mode & 0o777) == 0o600
    assert sitefacts.read(tmp_path / "state", "tholey")["backend"] == "cloud"


def test_facts_import_rejects_facts_of_another_site(tmp_path, run):
    out = tmp_path / "out.json"
    out.write_text(json.dumps(_doc()), encoding="utf-8")
    rc, _, err = run("--state", tmp_path / "state", "facts", "import", "--kommune", "nalbach", out)
    assert rc == 2
    assert "expected 'nalbach'" in err
    assert not (tmp_path / "state" / "facts" / "nalbach.json").exists()


def test_facts_import_unreadable_file(tmp_path, run):
    rc, _, err = run("--state", tmp_path, "facts", "import", "--kommune", "tholey", tmp_path / "missing.json")
    assert rc == 2 and "cannot read JSON" in err and "Traceback" not in err


# --- facts are input: ssh options, addresses --------------------------------------------------

ESTATE = load_estate("inventory")
LAB_ARGS = "-o IdentitiesOnly=yes -o UserKnownHostsFile=/var/lib/basisit/lab/known_hosts -o StrictHostKeyChecking=yes"


def _with_ssh(common_args: str, **ssh) -> dict:
    doc = _doc()
    doc["ssh"] = {"user": "root", "private_key_file": "/var/lib/basisit/lab/id_ed25519", "common_args": common_args}
    doc["ssh"].update(ssh)
    return doc


def test_the_labs_ssh_options_are_allowed():
    doc = _with_ssh(LAB_ARGS + " -oServerAliveInterval=7 -o connecttimeout=3")
    sitefacts.validate(doc)
    sitefacts.check_against_model(doc, SITE, estate=ESTATE)
    assert ("ServerAliveInterval", "7") in sitefacts.ssh_options(doc["ssh"]["common_args"])


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        ("-o ProxyCommand=touch /tmp/pwned", "option ProxyCommand is not allowed"),
        ("-o 'ProxyCommand=sh -c id'", "option ProxyCommand is not allowed"),
        ("-oProxyCommand=nc %h %p", "option ProxyCommand is not allowed"),
        ("-o proxycommand=nc", "option proxycommand is not allowed"),
        ("-o LocalCommand=id -o PermitLocalCommand=yes", "option LocalCommand is not allowed"),
        ("-o PermitLocalCommand=yes", "option PermitLocalCommand is not allowed"),
        ("-F /tmp/evil_config", "'-F' is not allowed"),
        ("-i /tmp/other_key", "'-i' is not allowed"),
        ("-L 8080:10.0.0.1:80", "'-L' is not allowed"),
        ("-o StrictHostKeyChecking=no", "StrictHostKeyChecking='no': not an allowed value"),
        ("-o UserKnownHostsFile=/dev/null", None),  # a plain path is a path (strict checking stays on)
        ("-o 'UserKnownHostsFile=/k h'", "UserKnownHostsFile='/k h': not an allowed value"),
        ("-o IdentitiesOnly", "expected Key=Value"),
        ("-o 'ProxyCommand=unbalanced", "cannot be split into arguments"),
    ],
)
def test_ssh_common_args_allow_list(args, expect):
    doc = _with_ssh(args)
    if expect is None:
        sitefacts.validate(doc)
        return
    with pytest.raises(sitefacts.FactsError) as e:
        sitefacts.validate(doc, "out.json")
    assert str(e.value).startswith("out.json: ssh/common_args: ") and expect in str(e.value)


def test_proxyjump_only_to_the_management_host():
    mgmt = ESTATE.zentral.hosts_with_role("mgmt_host")[0]
    for ok in (f"-J {mgmt.address}", f"-o ProxyJump=root@{mgmt.name}:22", f"-J{mgmt.fqdn}"):
        doc = _with_ssh(ok)
        sitefacts.validate(doc)
        sitefacts.check_against_model(doc, SITE, estate=ESTATE)
    doc = _with_ssh("-J attacker.example:22")
    sitefacts.validate(doc)  # well-formed …
    with pytest.raises(
        sitefacts.FactsError,
        match=r"ssh/common_args: ProxyJump 'attacker\.example:22' is not the estate's management host",
    ):
        sitefacts.check_against_model(doc, SITE, "out.json", ESTATE)
    with pytest.raises(sitefacts.FactsError, match="ProxyJump"):  # without the estate no jump is known
        sitefacts.check_against_model(_with_ssh(f"-J {mgmt.address}"), SITE)


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("user", "root -o ProxyCommand=id", "ssh/user"),
        ("private_key_file", "id_ed25519", "ssh/private_key_file"),
        ("known_hosts_file", "/k/kh\nProxyCommand id", "ssh/known_hosts_file"),
    ],
)
def test_ssh_fields_are_plain(field, value, expect):
    with pytest.raises(sitefacts.FactsError, match=expect):
        sitefacts.validate(_with_ssh(LAB_ARGS, **{field: value}))


def test_ansible_host_must_lie_in_the_sites_plan():
    doc = _doc()
    doc["hosts"]["tholey-dc1"]["ansible_host"] = "203.0.113.7"
    with pytest.raises(
        sitefacts.FactsError, match=r"hosts/tholey-dc1/ansible_host: 203\.0\.113\.7 lies outside tholey's"
    ):
        sitefacts.check_against_model(doc, SITE)
    other = ESTATE.kommunen["nalbach"].hosts[0].address  # another Kommune's plan is not this one's
    doc["hosts"]["tholey-dc1"]["ansible_host"] = str(other)
    with pytest.raises(sitefacts.FactsError, match="tholey-dc1/ansible_host"):
        sitefacts.check_against_model(doc, SITE)
    doc["hosts"]["tholey-dc1"]["ansible_host"] = "dc1.example"
    with pytest.raises(sitefacts.FactsError, match="hosts/tholey-dc1/ansible_host"):
        sitefacts.validate(doc)


def test_zones_must_be_the_planned_ones():
    doc = _doc()
    doc["zones"]["server"] = "0.0.0.0/0"
    with pytest.raises(sitefacts.FactsError, match=r"zones/server: 0\.0\.0\.0/0 differs from the model"):
        sitefacts.check_against_model(doc, SITE)


def test_facts_import_refuses_proxycommand_exit_2_nothing_written(tmp_path, run):
    marker = tmp_path / "pwned"
    out = tmp_path / "out.json"
    out.write_text(json.dumps({"site_facts": _with_ssh(f"-o 'ProxyCommand=touch {marker}'")}), encoding="utf-8")
    rc, _, err = run("--state", tmp_path / "state", "facts", "import", "--kommune", "tholey", out)
    assert rc == 2
    assert f"{out}: ssh/common_args: option ProxyCommand is not allowed" in err and "Traceback" not in err
    assert not (tmp_path / "state" / "facts").exists() and not marker.exists()


def test_facts_import_refuses_an_address_outside_the_plan(tmp_path, run):
    doc = _doc()
    doc["hosts"]["tholey-gw"]["ansible_host"] = "198.51.100.1"
    out = tmp_path / "out.json"
    out.write_text(json.dumps(doc), encoding="utf-8")
    rc, _, err = run("--state", tmp_path / "state", "facts", "import", "--kommune", "tholey", out)
    assert rc == 2 and "hosts/tholey-gw/ansible_host: 198.51.100.1 lies outside" in err
    assert not (tmp_path / "state" / "facts" / "tholey.json").exists()


def _tamper(state, slug: str, common_args: str) -> None:
    """An edited facts file in the state directory (not through import)."""
    p = sitefacts.facts_path(state, slug)
    doc = json.loads(p.read_text(encoding="utf-8"))
    doc.setdefault("ssh", {})["common_args"] = common_args
    p.write_text(json.dumps(doc), encoding="utf-8")


def test_facts_are_checked_when_read(tmp_path, run):
    state = tmp_path / "state"
    sitefacts.write(state, _with_ssh(LAB_ARGS))
    assert sitefacts.read(state, "tholey", ESTATE)["site"] == "tholey"
    _tamper(state, "tholey", LAB_ARGS + " -o ProxyCommand=id")
    with pytest.raises(sitefacts.FactsError, match=r"tholey\.json: ssh/common_args: option ProxyCommand"):
        sitefacts.read(state, "tholey", ESTATE)
    # basisit verify refuses it before any ssh runs: exit 2, file and field named, no run written
    rc, _, err = run("--state", state, "verify", "--kommune", "tholey")
    assert rc == 2 and "tholey.json: ssh/common_args: option ProxyCommand is not allowed" in err
    assert not (state / "reports").exists() and not (state / "verify").exists()


def test_inventory_plugin_refuses_edited_facts(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    state = tmp_path / "state"
    sitefacts.write(state, _with_ssh(LAB_ARGS))
    _tamper(state, "tholey", f"-o 'ProxyCommand=touch {tmp_path / 'pwned'}'")
    env = {**os.environ, "BASISIT_STATE": str(state), "ANSIBLE_CONFIG": str(root / "ansible.cfg")}
    p = subprocess.run(
        [Path(sys.executable).parent / "ansible-inventory", "-i", root / "inventory", "--list"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0
    assert "ssh/common_args: option ProxyCommand is not allowed" in p.stderr
    assert "ProxyCommand" not in p.stdout and not (tmp_path / "pwned").exists()
