"""Which reachability cases a run generates: a run checks its own sites' flows, never a site it
does not check (that site's own run reports it, unreachable hosts included)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict

import pytest
from conftest import ROOT

from basisit.validate import load_estate
from basisit.verify import plugin, suite
from basisit.verify import targets as tg

ESTATE = load_estate(ROOT / "inventory")
REALISED = ("zentral", "nalbach", "bous")


@pytest.fixture(autouse=True)
def _compliance_markers(pytestconfig):
    """The suite's markers (its conftest registers them in a verify run)."""
    for m in plugin.MARKERS:
        pytestconfig.addinivalue_line("markers", m)


def _cases(tmp_path, monkeypatch, kommunen: list[str]) -> tuple[list, list]:
    hosts = [
        tg.Host(
            name=h.name,
            kommune=s,
            roles=list(h.roles),
            address=str(h.address),
            addresses={z: str(a) for z, a in h.addresses.items()},
            check=s in kommunen,
            reachable=True,
        )
        for s in REALISED
        for h in ESTATE.site(s).hosts
    ]
    ctx = tmp_path / "context.json"
    doc = {
        "ssh_config": "",
        "kommunen": kommunen,
        "inventory": str(ROOT / "inventory"),
        "hosts": [asdict(h) for h in hosts],
    }
    ctx.write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setenv(tg.CONTEXT_ENV, str(ctx))
    suite.context.cache_clear()
    suite.estate.cache_clear()
    spec = importlib.util.spec_from_file_location("reach", ROOT / "tests" / "compliance" / "test_reachability.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reach", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    try:
        return [p.values[0] for p in mod.allowed_cases()], [p.values[0] for p in mod.forbidden_cases()]
    finally:
        suite.context.cache_clear()
        suite.estate.cache_clear()


def _site(name: str) -> str:
    return next(h.site for h in ESTATE.hosts() if h.name == name)


@pytest.mark.parametrize("kommunen", [["zentral"], ["nalbach"], ["nalbach", "zentral"]])
def test_cases_stay_within_the_checked_sites(tmp_path, monkeypatch, kommunen):
    allowed, _ = _cases(tmp_path, monkeypatch, kommunen)
    assert allowed
    for c in allowed:
        ends = {_site(c.name), _site(c.dst)}
        if c.kommune == "zentral":
            assert ends == {"zentral"}, c  # zentral's run never probes from or into a Kommune
        else:
            assert c.kommune in ends and ends <= {c.kommune, "zentral"}, c


def test_a_kommunes_flows_into_zentral_are_checked_with_it(tmp_path, monkeypatch):
    allowed, forbidden = _cases(tmp_path, monkeypatch, ["nalbach"])
    rules = {(c.rule, _site(c.dst)) for c in allowed}
    assert {("server-backup", "zentral"), ("server-log", "zentral"), ("gateway-log", "zentral")} <= rules
    # across Kommunen, both directions, with the other realised Kommune
    assert {(_site(c.name), _site(c.dst)) for c in forbidden} >= {("nalbach", "bous"), ("bous", "nalbach")}


@pytest.mark.parametrize("kommunen", [["nalbach"], ["zentral"]])
def test_ssh_from_the_gateways_is_a_forbidden_sample(tmp_path, monkeypatch, kommunen):
    """SSH only from zentral's management host: the gateways' addresses are probed as forbidden."""
    _, forbidden = _cases(tmp_path, monkeypatch, kommunen)
    zgw = ESTATE.zentral.host("gw")
    from_zgw = {c.source for c in forbidden if c.name == zgw.name}
    if kommunen == ["zentral"]:
        assert from_zgw == {str(zgw.address)}
        return
    assert from_zgw == {str(a) for a in zgw.addresses.values()}
    gw = ESTATE.site("nalbach").host("gw")
    assert [c.dst for c in forbidden if c.name == gw.name and c.source == str(gw.addresses["management"])] == [
        "nalbach-dc1"
    ]
