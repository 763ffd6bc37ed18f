"""The log host files by source address: the model's senders (basisit.policy.log_senders), the
lookup that hands them to roles/log_host, the rendered rsyslog configuration and lookup table,
and the compliance check's reading of a receiver configuration (old and new)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
from conftest import ROOT

from basisit import policy
from basisit.validate import load_estate

os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import lookup_loader
from ansible.template import Templar, trust_as_template

lookup_loader.add_directory(str(ROOT / "plugins" / "lookup"))
INVENTORY = ROOT / "inventory"
ROLE = ROOT / "roles" / "log_host"


@pytest.fixture(scope="module")
def estate():
    return load_estate(INVENTORY)


def _host(estate, name):
    return next(h for h in estate.hosts() if h.name == name)


def _expected_senders(estate) -> dict[str, str]:
    """Written from the standard's log rules by hand (server-log: the server zone; gateway-log:
    the gateway's management address, the source of its routes into the tunnel; zentral's gateway
    from its services address, the log host's zone, its management host and backup server from
    their one address), independent of policy's resolver."""
    out = {}
    for k in estate.kommunen.values():
        for h in k.hosts:
            for zone, addr in h.addresses.items():
                if zone == "server" or (zone == "management" and "gateway" in h.roles):
                    out[str(addr)] = h.name
    zentral = {h.name: h for h in estate.zentral.hosts}
    out[str(zentral["zentral-gw"].addresses["services"])] = "zentral-gw"
    out[str(zentral["zentral-mgmt"].address)] = "zentral-mgmt"
    out[str(zentral["zentral-backup"].address)] = "zentral-backup"
    return dict(sorted(out.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))))


def test_log_rules_are_the_rules_naming_the_log_host(estate):
    assert policy.log_rules(estate) == [
        "gateway-log",
        "server-log",
        "zentral-backup-log",
        "zentral-gateway-log",
        "zentral-mgmt-log",
    ]


def test_senders_are_every_kommune_server_and_gateway_address(estate):
    log = _host(estate, "zentral-log")
    got = policy.log_senders(estate, log)
    assert got == _expected_senders(estate)
    # nalbach (S): the DC and the gateway, which sends through the tunnel from its management
    # address (and has a server one); never from its transfer address
    nalbach = {a: n for a, n in got.items() if n.startswith("nalbach-")}
    assert nalbach == {"10.160.168.65": "nalbach-gw", "10.160.168.74": "nalbach-dc1", "10.160.168.1": "nalbach-gw"}
    names = set(got.values())
    # zentral's hosts but the log host itself; the gateway from its services address only
    zentral = {a: n for a, n in got.items() if n.startswith("zentral-")}
    assert zentral == {"10.160.0.10": "zentral-mgmt", "10.160.0.65": "zentral-gw", "10.160.0.74": "zentral-backup"}
    assert not {h.name for h in estate.hosts() if "endpoint" in h.roles} & names
    assert len(got) > 150 and list(got) == sorted(got, key=lambda a: tuple(int(x) for x in a.split(".")))


def test_senders_only_for_a_log_host(estate):
    for h in estate.hosts():
        if "log_host" not in h.roles:
            assert policy.log_senders(estate, h) == {}, h.name


def test_lookup_hands_the_senders_over(estate):
    got = lookup_loader.get("basisit_model").run(
        ["log_senders"], variables={"basisit_inventory_dir": str(INVENTORY)}, host="zentral-log"
    )
    assert got == [policy.log_senders(estate, _host(estate, "zentral-log"))]


def _variables() -> dict:
    loader = DataLoader()
    v = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    v.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    v.update(inventory_hostname="zentral-log", basisit_inventory_dir=str(INVENTORY), ansible_managed="managed")
    return v


def test_rendered_table_and_receiver(estate):
    """The role's default (through the lookup) renders the table rsyslog loads, and the receiver
    names files by the looked-up name or unknown/<fromhost-ip>, never by HOSTNAME."""
    v = _variables()
    t = Templar(loader=DataLoader(), variables=v)
    table = json.loads(t.template(trust_as_template("{{ __log_host_senders_table | to_nice_json }}")))
    assert (table["version"], table["type"], table["nomatch"]) == (1, "string", "")
    want = policy.log_senders(estate, _host(estate, "zentral-log"))
    assert {e["index"]: e["value"] for e in table["table"]} == want
    assert [e["index"] for e in table["table"]] == list(want)  # stable order: an idempotent file
    conf = t.template(trust_as_template((ROLE / "templates" / "rsyslog-receiver.conf.j2").read_text(encoding="utf-8")))
    assert "%HOSTNAME%" not in conf and 'name="hostname"' not in conf.lower()
    assert 'lookup_table(name="basisit_senders" file="/etc/rsyslog.d/basisit-senders.json")' in conf
    assert 'set $.basisit_sender = lookup("basisit_senders", $fromhost-ip);' in conf
    assert 'constant(value="/var/log/remote/unknown/")' in conf
    assert 'input(type="imtcp" port="514" ruleset="basisit_remote")' in conf
    assert f"{len(want)} addresses" in conf


# --- the compliance check's reading of a receiver configuration ----------------------------------


@pytest.fixture(scope="module")
def check(request):
    from basisit.verify import plugin

    for m in plugin.MARKERS:  # the suite's markers, as its conftest registers them in a verify run
        request.config.addinivalue_line("markers", m)
    path = ROOT / "tests" / "compliance" / "test_log_host.py"
    spec = importlib.util.spec_from_file_location("_check_log_host", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


OLD_RECEIVER = """module(load="imtcp")
template(name="BasisitRemote" type="string" string="/var/log/remote/%HOSTNAME%/syslog.log")
ruleset(name="basisit_remote") {
    action(type="omfile" dynaFile="BasisitRemote" dirCreateMode="0750" fileCreateMode="0640")
    stop
}
input(type="imtcp" port="514" ruleset="basisit_remote")
"""


def _run(fn):
    try:
        fn()
    except AssertionError as e:
        return str(e)
    return None


def test_check_refuses_the_old_receiver_and_passes_the_new(check):
    err = _run(lambda: check.test_receiver_files_by_source_address(OLD_RECEIVER))
    assert err and "BasisitRemote" in err and "HOSTNAME" in err
    new = Templar(loader=DataLoader(), variables=_variables()).template(
        trust_as_template((ROLE / "templates" / "rsyslog-receiver.conf.j2").read_text(encoding="utf-8"))
    )
    assert _run(lambda: check.test_receiver_files_by_source_address(new)) is None
    # a legacy $template with a claimed property, used with the ?name syntax
    legacy = new + '$template Claimed,"/var/log/remote/%programname%.log"\n*.* ?Claimed\n'
    err = _run(lambda: check.test_receiver_files_by_source_address(legacy))
    assert err and "Claimed" in err and "programname" in err
    assert check._templates(new).keys() >= {"BasisitRemoteKnown", "BasisitRemoteUnknown"}
