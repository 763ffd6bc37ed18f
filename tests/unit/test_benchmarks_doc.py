"""docs/benchmarks.md is generated from bench/results/*.json and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
