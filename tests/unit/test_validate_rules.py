"""Each rule step of the standard and of a Kommune file, seen firing (issue 16 split them into
named steps): one change to a copy of the shipped inventory, the problem it must cause (file,
Kommune, field, words), in process through `load_estate`. The shipped inventory passes them all."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import edit

from basisit.validate import InventoryError, load_estate


def problems_of(inv) -> list:
    with pytest.raises(InventoryError) as e:
        load_estate(inv)
    return e.value.problems


def assert_problem(problems, file, kommune: str, field: str, *words: str) -> None:
    hits = [
        p
        for p in problems
        if p.file == str(file) and p.kommune == kommune and p.field == field and all(w in p.message for w in words)
    ]
    assert hits, "\n".join(str(p) for p in problems)


def _set(path: str, value):
    """A change that sets the dotted path (list indices as numbers) to value."""

    def change(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return change


def _two_gateways(d):
    d["host_kinds"]["dc"]["roles"].append("gateway")


def _duplicate_uid(d):
    d["admins"][1]["uid"] = d["admins"][0]["uid"]


def _duplicate_rule(d):
    d["allow"][1]["name"] = d["allow"][0]["name"]


def _nopasswd_without_reason(d):
    d["access"]["admin_sudo"] = {"nopasswd": True}


STANDARD = [
    # size classes
    (_set("size_classes.M.max_population", None), "size_classes.M.max_population", ["could never apply"]),
    (_set("size_classes.L.max_population", 99999), "size_classes.L.max_population", ["without a size class"]),
    (_set("size_classes.S.max_population", -5), "size_classes.S.max_population", ["is negative"]),
    (_set("size_classes.M.max_population", 5000), "size_classes.M.max_population", ["expected ascending"]),
    # waves
    (_set("waves", []), "waves", ["no waves"]),
    # services
    (_set("services.ad.domain_suffix", "basisit.local"), "services.ad.domain_suffix", [".local"]),
    (
        lambda d: d["services"]["password_policy"].update(max_age_days=30, min_age_days=30),
        "services.password_policy.min_age_days",
        ["not below max_age_days 30"],
    ),
    (
        _set("services.lockout.observation_window_minutes", 30),
        "services.lockout.observation_window_minutes",
        ["exceeds duration_minutes"],
    ),
    (
        _set("services.backup.retention", {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}),
        "services.backup.retention",
        ["nothing is kept"],
    ),
    (_set("services.ntp.servers", []), "services.ntp.servers", ["NTP server"]),
    (_set("services.dns.forwarders", []), "services.dns.forwarders", ["DNS forwarder"]),
    (_set("endpoints.os", []), "endpoints.os", ["endpoint OS"]),
    # access
    (_nopasswd_without_reason, "access.admin_sudo.reason", ["say why"]),
    (_set("access.admin_sudo", {"nopasswd": False, "reason": "x"}), "access.admin_sudo.reason", ["nothing to justify"]),
    (_duplicate_uid, "admins[1].uid", ["expected unique uids"]),
    # allow
    (_duplicate_rule, "allow[1].name", ["duplicate rule name"]),
    (_set("allow.0.proto", []), "allow[0].proto", ["tcp and/or udp"]),
    (_set("allow.0.ports", []), "allow[0].ports", ["at least one port"]),
    # host numbers
    (_two_gateways, "host_kinds", ["2 host kinds with role gateway"]),
    (_set("host_kinds.fs.host", 70), "host_kinds.fs.host", ["does not fit the /26 server zone"]),
    (_set("host_kinds.fs.host", 11), "host_kinds.fs.host", ["server host 11 is also dc"]),
    (_set("host_kinds.dc.host", 1), "host_kinds.dc.host", ["is also the gateway"]),
    # addressing
    (_set("addressing.transfer_gateway_host", 1), "addressing.transfer_gateway_host", ["same host number"]),
    (_set("addressing.transfer_zentral_host", 15), "addressing.transfer_zentral_host", ["/28 transfer zone"]),
    (_set("addressing.endpoint_first_host", 510), "addressing.endpoint_first_host", ["no room for endpoints"]),
]


@pytest.mark.parametrize(("change", "field", "words"), STANDARD, ids=[f"{c[1]}-{c[2][0]}" for c in STANDARD])
def test_standard_rule(inv, change, field, words):
    std = inv / "standard.yaml"
    edit(std, change)
    assert_problem(problems_of(inv), std, "standard", field, *words)


def _endpoint(i: int, **fields):
    def change(d):
        d["endpoints"][i].update(fields)

    return change


def _copy_endpoint_field(name: str):
    def change(d):
        d["endpoints"][1][name] = d["endpoints"][0][name]

    return change


KOMMUNE = [
    (_set("slug", "tholey"), "slug", ["does not match the file name"]),
    (_set("ags", "1004411"), "ags", ["is not 8 digits"]),
    (_set("ags", "09044113"), "ags", ["not a Saarland code"]),
    (_set("district", "Merzig-Wadern"), "district", ["does not match the AGS district key 044", "'Saarlouis'"]),
    (_set("population.count", -1), "population.count", ["is negative"]),
    (_set("population.date", dt.date.today() + dt.timedelta(days=30)), "population.date", ["lies in the future"]),
    (_set("ad_domain", "nalbach.local"), "ad_domain", [".local"]),
    (_set("netbios", "nalbach"), "netbios", ["not a valid NetBIOS domain name"]),
    (_endpoint(0, hostname="nal-ws-0000000001"), "endpoints[0].hostname", ["NetBIOS limit"]),
    (_copy_endpoint_field("hostname"), "endpoints[1].hostname", ["duplicate endpoint hostname"]),
    (_copy_endpoint_field("index"), "endpoints[1].index", ["duplicate endpoint index"]),
    (_endpoint(1, asset_tag="nal-it-1001"), "endpoints[1].asset_tag", ["duplicate asset tag"]),
]


@pytest.mark.parametrize(("change", "field", "words"), KOMMUNE, ids=[f"{c[1]}-{c[2][0]}" for c in KOMMUNE])
def test_kommune_rule(inv, change, field, words):
    path = inv / "kommunen" / "nalbach.yaml"
    edit(path, change)
    assert_problem(problems_of(inv), path, "nalbach", field, *words)


def test_invalid_file_slug(inv):
    src = inv / "kommunen" / "nalbach.yaml"
    dst = inv / "kommunen" / "Nalbach_X.yaml"
    src.rename(dst)
    assert_problem(problems_of(inv), dst, "Nalbach_X", "slug", "not a valid slug")


def test_a_rule_stops_at_an_invalid_field_the_others_still_run(inv):
    """A field that failed its schema is skipped by its rule (no traceback); the other rules of
    the same file still report."""
    path = inv / "kommunen" / "nalbach.yaml"
    edit(path, lambda d: d.update(ags=12345, netbios="nalbach"))
    problems = problems_of(inv)
    assert_problem(problems, path, "nalbach", "netbios", "not a valid NetBIOS domain name")
    assert [p for p in problems if p.field == "ags"]  # the schema's error, the AGS rule skipped


def test_the_shipped_inventory_passes_every_rule():
    from conftest import INVENTORY

    load_estate(INVENTORY)
