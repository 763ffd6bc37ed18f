"""Retire cleanly (issue 15): a Kommune marked `status: retired`, an endpoint removed.

Nothing of another Kommune changes: every other Kommune's hostvars (ansible-inventory --list) and
derived values (firewall rule sets, peers, senders: basisit.derived.VALUES) are identical before
and after; zentral's change exactly by the retired Kommune. `basisit retire` refuses a Kommune
that is not marked, and records a cloud retirement in the ledger, the history and the dashboard.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import ROOT, edit
from test_inventory_plugin import inventory_list

from basisit import derived, retire
from basisit.report import dashboard
from basisit.validate import InventoryError, load_estate
from basisit.verify import history

RETIRED = "bous"


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory", dst)
    return dst


def _retire(inv: Path, slug: str = RETIRED) -> None:
    edit(inv / "kommunen" / f"{slug}.yaml", lambda d: d.update(status="retired"))


def _values(estate, hosts) -> dict:
    return {h.name: {name: fn(estate, h) for name, (_, fn) in derived.VALUES.items()} for h in hosts}


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retire")
    inv = _copy(tmp)
    _retire(inv)
    return load_estate(ROOT / "inventory"), load_estate(inv), inv, tmp


def test_retired_kommune_leaves_the_estate_but_stays_reserved(before_after):
    before, after, _, _ = before_after
    assert RETIRED in before.kommunen and RETIRED not in after.kommunen
    assert after.retired[RETIRED].block == before.kommunen[RETIRED].block  # its net_index stays reserved
    assert len(after.hosts()) == len(before.hosts()) - len(before.kommunen[RETIRED].hosts)


def test_nothing_of_another_kommune_changes(before_after):
    before, after, _, _ = before_after
    others = [h for s in after.kommunen.values() for h in s.hosts]
    assert others and _values(before, others) == _values(after, others)
    assert {s: after.kommunen[s].to_dict() for s in after.kommunen} == {
        s: before.kommunen[s].to_dict() for s in after.kommunen
    }


def test_other_kommunen_hostvars_identical(before_after, tmp_path):
    _, after, inv, _ = before_after
    b = inventory_list(tmp_path / "s")
    a = inventory_list(tmp_path / "s", inv)
    other = {h.name for s in after.kommunen.values() for h in s.hosts}
    hv_b, hv_a = b["_meta"]["hostvars"], a["_meta"]["hostvars"]
    assert not {n for n in hv_a if n.startswith(f"{RETIRED}-")}
    drop = {"basisit_inventory_dir"}  # the copy's own path
    for name in sorted(other):
        assert {k: v for k, v in hv_a[name].items() if k not in drop} == {
            k: v for k, v in hv_b[name].items() if k not in drop
        }, name
    assert RETIRED in b and RETIRED not in a


def test_zentral_drops_exactly_the_retired_kommune(before_after):
    before, after, _, _ = before_after
    gone = before.kommunen[RETIRED]
    for h in after.zentral.hosts:
        peers_b = policy_vals(before, h, "vpn_peers")
        peers_a = policy_vals(after, h, "vpn_peers")
        assert [p for p in peers_b if p["kommune"] != RETIRED] == peers_a
        senders_a = policy_vals(after, h, "log_senders")
        assert not [n for n in senders_a.values() if n.startswith(f"{RETIRED}-")]
        fwd = policy_vals(after, h, "firewall_forward")
        assert not [
            r
            for r in fwd
            if any(str(gone.block) in s or s.startswith(str(gone.block.network_address)[:-1]) for s in r["src"])
        ]
        want = [RETIRED] if "backup_server" in h.roles else []
        assert policy_vals(after, h, "retired_kommunen") == want
    hub = next(h for h in before.zentral.hosts if "vpn_hub" in h.roles)
    assert any(p["kommune"] == RETIRED for p in policy_vals(before, hub, "vpn_peers"))


def policy_vals(estate, host, name):
    return derived.VALUES[name][1](estate, host)


def test_status_is_validated(tmp_path):
    inv = _copy(tmp_path)
    edit(inv / "kommunen" / f"{RETIRED}.yaml", lambda d: d.update(status="gone"))
    with pytest.raises(InventoryError) as e:
        load_estate(inv)
    report = e.value.report()
    assert f"{RETIRED}.yaml" in report and "status" in report, report


def test_endpoint_removed_changes_no_other_host(tmp_path):
    inv = _copy(tmp_path)
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(endpoints=d["endpoints"][1:]))
    before, after = load_estate(ROOT / "inventory"), load_estate(inv)
    assert "nalbach-nal-ws-001" not in {h.name for h in after.hosts()}
    address = str(before.site("nalbach").host("nal-ws-001").address)
    vb, va = _values(before, after.hosts()), _values(after, after.hosts())
    # The rules that name single hosts (zentral's SSH to every host, ...) lose the endpoint's /32
    # (derived, so the next converge of those routers and hosts drops it); nothing else changes.
    changed = {(h, n) for h in va for n in va[h] if va[h][n] != vb[h][n]}
    assert changed, "some rule names the endpoint's own address"
    for h, n in changed:
        assert address in json.dumps(vb[h][n]) and address not in json.dumps(va[h][n]), (h, n)
    assert {h.split("-")[0] for h, _ in changed} <= {"nalbach", "zentral"}, changed


def test_retire_refuses_a_kommune_not_marked(run, tmp_path):
    rc, _, err = run("--inventory", ROOT / "inventory", "--state", tmp_path, "retire", "--kommune", RETIRED)
    assert rc == 2 and "status: retired" in err and f"{RETIRED}.yaml" in err, err
    rc, _, err = run("--inventory", ROOT / "inventory", "--state", tmp_path, "retire", "--kommune", "atlantis")
    assert rc == 2 and "unknown Kommune" in err, err


def test_selecting_a_retired_kommune_is_refused(run, before_after, tmp_path):
    _, _, inv, _ = before_after
    rc, _, err = run("--inventory", inv, "--state", tmp_path, "verify", "--kommune", RETIRED)
    assert rc == 2 and "retired" in err, err


def test_cloud_retire_prints_the_destroy_and_records_it(run, before_after, tmp_path):
    _, after, inv, _ = before_after
    state = tmp_path / "state"
    rc, out, err = run(
        "--inventory", inv, "--state", state, "retire", "--kommune", RETIRED, "--backend", "cloud", "--no-converge"
    )
    assert rc == 0, out + err
    assert f"pulumi destroy --stack {RETIRED} --cwd stacks/kommune" in out
    assert f"pulumi stack rm {RETIRED} --cwd stacks/kommune" in out
    until = retire.keep_until(after, dt.datetime.now(dt.UTC).date()).isoformat()
    assert until in out
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        steps = db.execute("SELECT site, step, result FROM steps ORDER BY rowid").fetchall()
        (sel, res) = db.execute("SELECT selection, result FROM runs").fetchone()
    finally:
        db.close()
    assert steps == [(RETIRED, "teardown", "ok"), (RETIRED, "retired", "ok")] and (sel, res) == (
        f"retire {RETIRED}",
        "ok",
    )
    row = history.retired(history.path_in(state))[RETIRED]
    assert row["backend"] == "cloud" and row["keep_until"] == until
    data = dashboard.build(after, state, [], dt.date.today())
    assert [r["slug"] for r in data["retired"]] == [RETIRED] and data["retired"][0]["keep_until"] == until
    assert RETIRED not in [k["slug"] for k in data["kommunen"]]
    page = dashboard.render(after, state, state / "dash", [], dt.date.today())
    html = (page if page.is_file() else page / "index.html").read_text(encoding="utf-8")
    assert 'id="retired-table"' in html and until in html


def test_keep_until_is_the_longest_retention(before_after):
    _, after, _, _ = before_after
    r = after.standard.services.backup.retention
    day = dt.date(2026, 1, 1)
    assert retire.keep_until(after, day) == day + dt.timedelta(
        days=max(r["keep_daily"], 7 * r["keep_weekly"], 31 * r["keep_monthly"])
    )
