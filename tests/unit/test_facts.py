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
