"""IP plan: one block per Kommune by net_index, zones inside it; property tests."""

from __future__ import annotations

import csv
import io
import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from basisit import model
from basisit.validate import load_estate

ESTATE = load_estate("inventory")
STD = ESTATE.standard
SUPERNET = STD.addressing.supernet
TEMPLATE = ESTATE.kommunen["nalbach"].kommune


def _site(net_index: int, slug: str = "nalbach") -> model.Site:
    k = TEMPLATE.model_copy(update={"net_index": net_index, "slug": slug, "ad_domain": f"{slug}.basisit.internal"})
    return model.derive_kommune(STD, ESTATE.zentral, k)


def _networks(site: model.Site) -> list[ipaddress.IPv4Network]:
    return [z.network for z in site.zones.values()]


# Highest usable index: the block must fit the supernet and the tunnel address the zentral vpn zone.
MAX = min(model.max_net_index(STD), ESTATE.zentral.zones["vpn"].network.num_addresses - 2)
indices = st.sets(st.integers(min_value=2, max_value=MAX), min_size=2, max_size=40)


@settings(max_examples=50, deadline=None)
@given(indices)
def test_blocks_are_disjoint_and_inside_the_supernet(idx):
    sites = [_site(i, f"k{i}") for i in idx]
    blocks = [s.block for s in sites]
    assert all(b.subnet_of(SUPERNET) for b in blocks)
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            assert not a.overlaps(b)
    for s in sites:
        assert all(n.subnet_of(s.block) for n in _networks(s))
        assert all(h.address in s.zones[h.primary_zone].network for h in s.hosts)


@settings(max_examples=50, deadline=None)
@given(indices, st.integers(min_value=2, max_value=MAX))
def test_adding_or_removing_a_kommune_changes_no_other_address(idx, extra):
    before = {i: _site(i, f"k{i}").to_dict() for i in idx}
    with_extra = {i: _site(i, f"k{i}").to_dict() for i in idx | {extra}}
    without_one = {i: _site(i, f"k{i}").to_dict() for i in sorted(idx)[1:]}
    for i, d in before.items():
        assert with_extra[i] == d
        if i in without_one:
            assert without_one[i] == d


def test_shipped_plan_has_no_overlap_including_zentral():
    nets = [(s.slug, z.network) for s in ESTATE.sites for z in s.zones.values()]
    for i, (sa, a) in enumerate(nets):
        for sb, b in nets[i + 1 :]:
            assert not a.overlaps(b), (sa, a, sb, b)


def test_model_kommune_plan():
    s = ESTATE.kommunen["nalbach"]
    assert str(s.block) == "10.160.168.0/22"
    assert {n: str(z.network) for n, z in s.zones.items()} == {
        "management": "10.160.168.0/26",
        "server": "10.160.168.64/26",
        "transfer": "10.160.168.128/28",
        "client": "10.160.170.0/23",
    }
    assert str(s.host("gw").addresses["client"]) == "10.160.170.1"
    assert str(s.host("dc1").address) == "10.160.168.74"
    assert str(s.host("nal-ws-001").address) == "10.160.170.101"
    assert str(s.zones["transfer"].gateway) == "10.160.168.129"  # zentral's router
    assert s.size == "S" and [h.short for h in s.hosts if h.kind != "ep"] == ["gw", "dc1"]


def test_size_classes_decide_hosts():
    assert ESTATE.kommunen["bexbach"].size == "M"
    assert [h.short for h in ESTATE.kommunen["bexbach"].hosts if h.kind != "ep"] == ["gw", "dc1", "fs1"]
    sb = ESTATE.kommunen["saarbruecken"]
    assert sb.size == "L"
    assert [h.short for h in sb.hosts if h.kind != "ep"] == ["gw", "dc1", "dc2", "fs1"]


def test_size_override(inv):
    import yaml

    p = inv / "kommunen" / "nalbach.yaml"
    d = yaml.safe_load(p.read_text(encoding="utf-8"))
    d["size"] = "L"
    p.write_text(yaml.safe_dump(d), encoding="utf-8")
    assert load_estate(inv).kommunen["nalbach"].size == "L"


def test_ipplan_formats(run):
    rc, out, _ = run("ipplan", "--kommune", "nalbach", "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    assert {r["zone"] for r in rows} == {"management", "server", "transfer", "client"}
    rc, out, _ = run("ipplan", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 52 * 4 + 3
    rc, out, _ = run("ipplan", "--kommune", "tholey")
    assert out.splitlines()[0].split()[:3] == ["SITE", "NAME", "NET_INDEX"]
    assert "10.161.12.0/22" in out


def test_ipplan_unknown_kommune(run):
    rc, _, err = run("ipplan", "--kommune", "atlantis")
    assert rc == 2 and "unknown Kommune 'atlantis'" in err


def test_inventory_show(run):
    rc, out, _ = run("inventory", "show", "bexbach", "--format", "json")
    d = json.loads(out)
    assert d["ags"] == "10045111" and d["realm"] == "BEXBACH.BASISIT.INTERNAL" and d["netbios"] == "BEXBACH"
    assert {h["name"] for h in d["hosts"]} >= {"bexbach-gw", "bexbach-dc1", "bexbach-fs1", "bexbach-bex-ws-001"}
    rc, out, _ = run("inventory", "show", "zentral")
    assert rc == 0 and "zentral-backup" in out
