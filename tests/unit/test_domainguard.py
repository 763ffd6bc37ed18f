"""The provisioning guard: a fresh DC host of a Kommune whose domain exists is refused, never provisioned anew."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from ansible.errors import AnsibleLookupError
from conftest import ROOT

from basisit import domainguard as g

spec = importlib.util.spec_from_file_location(
    "basisit_domain_guard", ROOT / "plugins" / "lookup" / "basisit_domain_guard.py"
)
lk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lk)

SID = "S-1-5-21-1549900946-3859243910-2423122779"
# what `samba-tool user show Administrator -H sam.ldb --attributes=objectSid` printed for a throwaway domain
SHOW = f"dn: CN=Administrator,CN=Users,DC=nal,DC=test\nobjectSid: {SID}-500\n\n"


def _write(state, slug="nalbach", **over):
    doc = {**g.record_doc(slug, "NALBACH.EGO-SAAR.DE", SID, f"{slug}-dc1"), **over}
    p = g.record_path(state, slug)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


def test_domain_sid_from_the_administrators_sid():
    assert g.domain_sid(SHOW) == SID
    for bad in ("", "objectSid: S-1-5-21-1-2-3-1104\n", "objectSid: S-1-5-32-544\n", "error: no such user"):
        with pytest.raises(g.RecordError, match="no Administrator objectSid"):
            g.domain_sid(bad)


def test_record_doc_refuses_a_non_domain_sid():
    assert g.record_doc("nalbach", "R", SID, "nalbach-dc1")["domain_sid"] == SID
    with pytest.raises(g.RecordError, match="not a domain SID"):
        g.record_doc("nalbach", "R", "S-1-5-32-544", "nalbach-dc1")


def test_read_record_none_when_missing_and_the_record_when_there(tmp_path):
    assert g.read_record(tmp_path, "nalbach") is None
    _write(tmp_path)
    assert g.read_record(tmp_path, "nalbach")["domain_sid"] == SID
    assert g.read_record(tmp_path, "bous") is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "unreadable domain record"),
        ("[]", "expected a mapping"),
        (json.dumps({"kommune": "nalbach", "realm": "R", "dc": "nalbach-dc1"}), "field 'domain_sid' missing"),
        (json.dumps({"kommune": "bous", "realm": "R", "domain_sid": SID, "dc": "x"}), "'kommune' is 'bous'"),
        (json.dumps({"kommune": "nalbach", "realm": "R", "domain_sid": "S-1-1-0", "dc": "x"}), "not a domain SID"),
    ],
)
def test_a_malformed_record_is_an_error_naming_file_and_field(tmp_path, content, match):
    p = g.record_path(tmp_path, "nalbach")
    p.parent.mkdir(parents=True)
    p.write_text(content, encoding="utf-8")
    with pytest.raises(g.RecordError, match=match) as e:
        g.read_record(tmp_path, "nalbach")
    assert str(p) in str(e.value)


def test_refusal_only_for_a_host_without_database_of_a_recorded_domain(tmp_path):
    p = _write(tmp_path)
    rec = g.read_record(tmp_path, "nalbach")
    assert g.refusal("nalbach", "nalbach-dc1", "dc1", True, rec, p) == ""  # a live DC: the normal converge
    assert g.refusal("nalbach", "nalbach-dc1", "dc1", False, None, p) == ""  # the first provision
    msg = g.refusal("nalbach", "nalbach-dc1", "dc1", False, rec, p)
    assert "nalbach-dc1 holds no domain database" in msg and SID in msg and "NEW domain" in msg
    assert "basisit restore --kommune nalbach --host dc1" in msg and f"remove {p}" in msg


def test_mismatch_only_for_another_sid(tmp_path):
    p = _write(tmp_path)
    rec = g.read_record(tmp_path, "nalbach")
    assert g.mismatch("nalbach", "nalbach-dc1", SID, rec, p) == ""
    assert g.mismatch("nalbach", "nalbach-dc1", "S-1-5-21-1-2-3", None, p) == ""
    msg = g.mismatch("nalbach", "nalbach-dc1", "S-1-5-21-1-2-3", rec, p)
    assert "S-1-5-21-1-2-3" in msg and SID in msg and str(p) in msg


def _lookup(*terms, **kw):
    return lk.LookupModule().run(list(terms), {}, **kw)[0]


def test_lookup_refusal_record_and_mismatch(tmp_path):
    common = {"state": str(tmp_path), "slug": "nalbach", "host": "nalbach-dc1"}
    assert _lookup("refusal", short="dc1", sam_exists=False, **common) == ""  # nothing recorded yet
    text = _lookup("record", realm="NALBACH.EGO-SAAR.DE", administrator_sid=SHOW, **common)
    assert json.loads(text) == g.record_doc("nalbach", "NALBACH.EGO-SAAR.DE", SID, "nalbach-dc1")
    g.record_path(tmp_path, "nalbach").parent.mkdir(parents=True)
    g.record_path(tmp_path, "nalbach").write_text(text, encoding="utf-8")
    assert "basisit restore --kommune nalbach --host dc1" in _lookup("refusal", short="dc1", sam_exists=False, **common)
    assert _lookup("refusal", short="dc1", sam_exists=True, **common) == ""
    assert _lookup("mismatch", administrator_sid=SHOW, **common) == ""
    other = SHOW.replace(SID, "S-1-5-21-7-8-9")
    assert "S-1-5-21-7-8-9" in _lookup("mismatch", administrator_sid=other, **common)


def test_lookup_errors_are_one_line(tmp_path):
    with pytest.raises(AnsibleLookupError, match="one of refusal, record, mismatch"):
        _lookup("provision", state=str(tmp_path), slug="nalbach", host="h")
    with pytest.raises(AnsibleLookupError, match="option 'sam_exists' is required"):
        _lookup("refusal", state=str(tmp_path), slug="nalbach", host="h")
    p = g.record_path(tmp_path, "nalbach")
    p.parent.mkdir(parents=True)
    p.write_text("{", encoding="utf-8")
    with pytest.raises(AnsibleLookupError, match=str(p)):
        _lookup("refusal", state=str(tmp_path), slug="nalbach", host="h", short="dc1", sam_exists=False)


def test_site_yml_runs_the_guard_first_and_a_refusal_stops_every_host():
    first = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text(encoding="utf-8"))[0]
    assert first["hosts"].startswith("ad_dc")
    role = first["tasks"][0]["ansible.builtin.include_role"]
    assert (role["name"], role["tasks_from"]) == ("ad_dc", "guard.yml")
    # the refusal only: an unreachable DC must not end the run of every other host
    tasks = yaml.safe_load((ROOT / "roles/ad_dc/tasks/guard.yml").read_text(encoding="utf-8"))
    assert [t.get("any_errors_fatal", False) for t in tasks] == [False, True]
    assert tasks[0]["ignore_unreachable"] is True and "unreachable" in tasks[1]["when"]
    assert "basisit_domain_guard" in tasks[1]["vars"]["__ad_dc_guard_refusal"]


def test_provision_refuses_before_anything_is_removed_or_provisioned():
    names = [t["name"] for t in yaml.safe_load((ROOT / "roles/ad_dc/tasks/provision.yml").read_text(encoding="utf-8"))]
    guard = names.index("A fresh DC host of a Kommune whose domain exists is restored, never provisioned anew")
    assert guard < names.index("Leftovers of standalone Samba are removed before provisioning")
    assert guard < names.index("Domain is provisioned (once, on the primary DC)")
    assert names.index("Domain is provisioned (once, on the primary DC)") < names.index(
        "The domain is recorded on the control host (<state>/domains/<slug>.json)"
    )


def test_lab_down_forgets_the_record_of_that_kommune_only(tmp_path):
    """`lab down` of a Kommune removes its record (every member of the domain went with it), no other."""
    _write(tmp_path, "nalbach")
    other = _write(tmp_path, "bous")
    assert g.forget(tmp_path, "nalbach") is True
    assert g.read_record(tmp_path, "nalbach") is None and other.exists()
    assert g.forget(tmp_path, "nalbach") is False
