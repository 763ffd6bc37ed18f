"""docs/benchmarks.md is generated from bench/results/*.json and must match them, and the results
describe what the code makes today (a result measured on other stacks or hosts is stale)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

from basisit.cloud import config as cloud_config
from basisit.cloud import mockrun
from basisit.validate import load_estate

ROOT = Path(__file__).resolve().parents[2]


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_doc_is_generated_from_the_results():
    report = _report()
    assert (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8") == report.render(), (
        "docs/benchmarks.md is out of date: run .venv/bin/python bench/report.py"
    )


def test_every_table_row_names_machine_and_date_or_says_not_measured():
    for what, figure, _detail, machine, date in _report().rows():
        assert figure == "not measured" or (machine and date.endswith("UTC")), what


# --- results that describe what the code makes today ---------------------------------------

STALE = "is stale: the model or the programs changed since it was measured; run {}, then bench/report.py"


def _result(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / name).read_text(encoding="utf-8"))


def test_stack_results_describe_the_stacks_the_programs_make_today():
    """bench/results/stacks.json: its stacks per size class are the model's, and a mock run of each
    class's example stack registers exactly the resources (by type) the file records."""
    res = _result("stacks.json")
    stale = "bench/results/stacks.json " + STALE.format("bench/stacks.py")
    estate = load_estate(ROOT / "inventory")
    classes: dict[str, list[str]] = {}
    for site in cloud_config.all_sites(estate):
        classes.setdefault("zentral" if site.is_zentral else str(site.size), []).append(site.slug)
    assert res["stacks"] == sum(len(v) for v in classes.values()), stale
    assert {k: c["stacks"] for k, c in res["by_size_class"].items()} == {k: len(v) for k, v in classes.items()}, stale
    total = 0
    for key, c in res["by_size_class"].items():
        assert c["example"] in classes[key], stale
        run = mockrun.run_site(estate, estate.site(c["example"]))
        assert dict(sorted(Counter(r.typ for r in run.resources).items())) == c["by_type"], f"{key}: {stale}"
        assert len(run.resources) == res["resources_by_stack"][c["example"]], f"{key}: {stale}"
        counts = c["resources_per_stack"]
        assert (len(run.resources) in counts) if isinstance(counts, list) else len(run.resources) == counts, stale
        total += sum(res["resources_by_stack"][slug] for slug in classes[key])
    assert res["resources_total"] == total, stale


def test_inventory_results_describe_the_hosts_of_today():
    """bench/results/inventory.json measured the estate the model has now (its hosts)."""
    res = _result("inventory.json")
    estate = load_estate(ROOT / "inventory")
    assert res["hosts"] == sum(len(s.hosts) for s in estate.sites), "bench/results/inventory.json " + STALE.format(
        "bench/inventory.py"
    )
    assert res["hostvars_bytes"]["max_host"] in {h.name for s in estate.sites for h in s.hosts}
