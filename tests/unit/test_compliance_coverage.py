"""docs/compliance-coverage.md is generated from the suite's markers and kept in sync; every
check of tests/compliance carries well-formed control ids and names the role feature it needs."""

from __future__ import annotations

import pytest

from basisit.verify import controls, coverage, plugin


@pytest.fixture(scope="module")
def found(request) -> list[dict]:
    # The suite's markers (registered by its conftest in a verify run) must be known to this session.
    for m in plugin.MARKERS:
        request.config.addinivalue_line("markers", m)
    return coverage.checks()


def test_coverage_doc_in_sync(found):
    want = coverage.render(found)
    have = coverage.DOC.read_text(encoding="utf-8") if coverage.DOC.exists() else ""
    assert have == want, "docs/compliance-coverage.md is out of date: run `python -m basisit.verify.coverage`"


def test_every_check_has_valid_controls(found):
    assert len(found) >= 50
    for c in found:
        assert c["controls"], f"{c['test_id']} carries no control id"
        bad = [(x, controls.problem(x)) for x in c["controls"] if controls.problem(x)]
        assert not bad, f"{c['test_id']}: {bad}"


def test_every_check_names_its_role_feature(found):
    # The per-host reachability probe needs no role: it is what every other check stands on.
    missing = [c["test_id"] for c in found if not c["features"] and c["test_id"] != "test_base::test_ssh_reachable"]
    assert not missing, f"checks without @pytest.mark.feature: {missing}"


def test_exception_lists_do_not_claim_checked_items(found):
    checked = {x for c in found for x in c["controls"]}
    for k in {**coverage.NOT_MACHINE_CHECKABLE, **coverage.NOT_CHECKED}:
        assert controls.problem(k) is None, k
        assert k not in checked, f"{k} is checked but listed as not checked"


def test_every_catalogue_is_covered(found):
    checked = {x.split(":")[0] for c in found for x in c["controls"]}
    assert checked == set(controls.CATALOGUES)
