"""The loader is fuzzed: whatever a Kommune file or the standard contains, load_estate either
returns an Estate or raises InventoryError — never anything else."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from conftest import INVENTORY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basisit.validate import InventoryError, load_estate

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.dates().map(str),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KOMMUNE = yaml.safe_load((INVENTORY / "kommunen" / "nalbach.yaml").read_text(encoding="utf-8"))
FIELDS = [*KOMMUNE, "endpoints.0.hostname", "endpoints.0.index", "population.count", "population.date", "size"]


def _load_with(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "inventory"
        shutil.copytree(INVENTORY, dst, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
        for rel, text in files.items():
            (dst / rel).write_text(text, encoding="utf-8")
        try:
            load_estate(dst)
        except InventoryError as e:
            assert e.problems
            assert all(p.file and p.message for p in e.problems)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_as_kommune_file(text):
    _load_with({"kommunen/nalbach.yaml": text})


@FUZZ
@given(values)
def test_arbitrary_yaml_document_as_kommune_file(doc):
    _load_with({"kommunen/nalbach.yaml": yaml.safe_dump(doc)})


@FUZZ
@given(st.sampled_from(FIELDS), values)
def test_one_field_replaced_by_anything(field, value):
    doc = yaml.safe_load(yaml.safe_dump(KOMMUNE))
    target, keys = doc, field.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    target[keys[-1]] = value
    _load_with({"kommunen/nalbach.yaml": yaml.safe_dump(doc, allow_unicode=True)})


@FUZZ
@given(values)
def test_arbitrary_standard(doc):
    _load_with({"standard.yaml": yaml.safe_dump(doc)})


# --- what the loader must refuse, anywhere in a file ------------------------------------------

LINES = (INVENTORY / "kommunen" / "nalbach.yaml").read_text(encoding="utf-8").splitlines()


TOP = [i for i, ln in enumerate(LINES) if i and ln and not ln.startswith((" ", "-", "#"))]


@FUZZ
@given(st.sampled_from([i for i in TOP if not LINES[i].endswith(":")]), st.sampled_from([*TOP, len(LINES)]))
def test_a_repeated_top_level_key_is_always_an_error(src, at):
    """A scalar top-level line written twice (before any top-level key, or at the end) is reported."""
    text = [*LINES[:at], LINES[src], *LINES[at:]]
    dup = at + 1  # 1-based line of the inserted copy
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "inventory"
        shutil.copytree(INVENTORY, dst, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
        (dst / "kommunen" / "nalbach.yaml").write_text("\n".join(text) + "\n", encoding="utf-8")
        try:
            load_estate(dst)
        except InventoryError as e:
            hits = [p for p in e.problems if "duplicate key" in p.message]
            assert hits, e.report()
            assert {p.line for p in hits} == {max(dup, src + 1 + (1 if at <= src else 0))}
        else:
            raise AssertionError("a repeated key was accepted")


@FUZZ
@given(st.sampled_from(FIELDS[:11]), st.from_regex(r"[a-z]{1,5}", fullmatch=True))
def test_an_alias_anywhere_is_refused(field, anchor):
    doc = yaml.safe_dump(KOMMUNE, sort_keys=False, allow_unicode=True)
    text = f"_anchor: &{anchor} x\n" + doc.replace(f"\n{field}: ", f"\n{field}: *{anchor}\n_was_{field}: ", 1)
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "inventory"
        shutil.copytree(INVENTORY, dst, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
        (dst / "kommunen" / "nalbach.yaml").write_text(text, encoding="utf-8")
        try:
            load_estate(dst)
        except InventoryError as e:
            assert any("alias" in p.message for p in e.problems) or f"\n{field}: " not in doc
        else:
            raise AssertionError("an alias was accepted")


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig"]))
def test_arbitrary_bytes_and_encodings_as_kommune_file(raw, encoding):
    text = (INVENTORY / "kommunen" / "nalbach.yaml").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "inventory"
        shutil.copytree(INVENTORY, dst, ignore=shutil.ignore_patterns("group_vars", "basisit.yml"))
        (dst / "kommunen" / "nalbach.yaml").write_bytes(text.encode(encoding, errors="replace") + raw)
        try:
            load_estate(dst)
        except InventoryError as e:
            assert e.problems and all(p.file and p.message and len(p.message) < 600 for p in e.problems)
