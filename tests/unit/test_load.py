"""basisit.load, the one YAML loader: what PyYAML's safe_load accepts it builds the same, and what
the inventory must never contain (duplicate keys, aliases, foreign tags, impossible values, huge
or deeply nested input) is a problem with a line and a field, never an exception."""

from __future__ import annotations

import datetime as dt
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basisit import load

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.dates(),
)
keys = st.one_of(st.text(max_size=10), st.integers(min_value=-5, max_value=50), st.booleans())
docs = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=15,
)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@PROPS
@given(docs, st.sampled_from([None, False, True]))
def test_builds_what_safe_load_builds(doc, flow):
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    got = load.load_text(text)
    assert got.problems == []
    assert same(got.data, yaml.safe_load(text))


@PROPS
@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), scalars, min_size=1, max_size=6), st.data())
def test_a_repeated_key_is_always_reported_with_both_lines(mapping, data):
    dup = data.draw(st.sampled_from(sorted(mapping)))
    lines = [yaml.safe_dump({k: v}, width=1000).rstrip("\n") for k, v in mapping.items()]
    lines = [ln for ln in lines if "\n" not in ln]  # one line per key
    if not any(ln.startswith(f"{dup}:") for ln in lines):
        return
    first = next(i for i, ln in enumerate(lines) if ln.startswith(f"{dup}:")) + 1
    text = "\n".join([*lines, f"{dup}: again"]) + "\n"
    got = load.load_text(text)
    [p] = [p for p in got.problems if "duplicate key" in p.message]
    assert p.line == len(lines) + 1 and p.field == dup
    assert f"first at line {first}" in p.message


@PROPS
@given(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.integers(min_value=1, max_value=40))
def test_aliases_are_refused_and_never_expanded(anchor, uses):
    text = f"base: &{anchor} [1, 2, 3]\n" + "".join(f"k{i}: *{anchor}\n" for i in range(uses))
    got = load.load_text(text)
    assert len(got.problems) == uses
    assert all("alias" in p.message and p.line == i + 2 for i, p in enumerate(got.problems))
    assert got.data["base"] == [1, 2, 3] and all(got.data[f"k{i}"] is None for i in range(uses))


@PROPS
@given(st.binary(max_size=200))
def test_any_bytes_are_a_result_not_an_exception(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("bytes") / "f.yaml"
    path.write_bytes(raw)
    got = load.load_file(path)
    assert all(p.message for p in got.problems)
    assert got.data is None or got.problems or isinstance(got.data, (dict, list, str, int, float, bool, dt.date))


@PROPS
@given(st.text(max_size=200))
def test_any_text_is_a_result_not_an_exception(text):
    got = load.load_text(text)
    assert all(p.message and p.line >= 0 for p in got.problems)


@PROPS
@given(st.sampled_from(["utf-16", "utf-16-le", "latin-1", "cp1252"]))
def test_non_utf8_is_refused_with_the_line(tmp_path_factory, encoding):
    path = tmp_path_factory.mktemp("enc") / "f.yaml"
    path.write_bytes("name: Kleinblittersdorf\ndistrict: Saarbrücken\n".encode(encoding))
    got = load.load_file(path)
    assert got.data is None
    [p] = got.problems
    assert "not UTF-8" in p.message or "unacceptable character" in p.message


def test_utf8_with_bom_is_accepted(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_bytes("\ufeffname: Saarbrücken\n".encode())
    assert load.load_file(path).data == {"name": "Saarbrücken"}


def test_alias_bomb_is_refused_at_once():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 10):
        prev, cur = chr(ord("a") + n - 1), chr(ord("a") + n)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    got = load.load_text("\n".join(lines) + "\n")
    assert got.problems and all("alias" in p.message for p in got.problems)
    assert len(got.problems) == 81
    assert sum(len(str(v)) for v in got.data.values()) < 1000  # nothing was expanded


def test_foreign_tags_are_refused_with_field_and_line():
    got = load.load_text("a: 1\nb: !!python/object/apply:os.system [echo hi]\nc: !vault |\n  $ANSIBLE\nd: !!set {x}\n")
    msgs = {p.field: (p.line, p.message) for p in got.problems}
    assert msgs["b"][0] == 2 and "!!python/object/apply:os.system" in msgs["b"][1]
    assert msgs["c"][0] == 3 and "!vault" in msgs["c"][1]
    assert msgs["d"][0] == 5 and "!!set" in msgs["d"][1]


def test_impossible_date_names_field_and_line():
    got = load.load_text("population:\n  count: 5\n  date: 2024-02-30\n")
    [p] = got.problems
    assert (p.line, p.field) == (3, "population.date")
    assert "'2024-02-30'" in p.message and "not a valid date" in p.message


def test_unclosed_quote_is_reported_where_it_opens():
    got = load.load_text("slug: tholey\nname: 'Tholey\nkind: Gemeinde\nwave: modell\n")
    [p] = got.problems
    assert p.line == 2 and "line 2, column 7" in p.message and "not closed" in p.message


def test_deep_nesting_is_refused_without_a_crash():
    got = load.load_text("[" * 200_000)  # the C composer would overflow its stack
    assert got.data is None and "nested deeper than" in got.problems[0].message


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate(load.MAX_BYTES + 1)  # sparse: nothing to parse would be cheap either
    got = load.load_file(path)
    assert got.data is None and "larger than the limit" in got.problems[0].message


def test_long_values_are_shown_truncated():
    got = load.load_text(f"a: 1\na: {'x' * 100_000}\n")
    assert got.problems and all(len(p.message) < 300 for p in got.problems)
    assert len(load.shown("y" * 10_000)) == load.SHOWN


def test_positions_name_every_field():
    got = load.load_text("a: 1\nlist:\n  - {h: x, i: 2}\n  - h: y\n    i: 3\n")
    assert got.positions["list[1].i"] == 5 and got.positions["list[0].h"] == 3
    assert got.line_of("list[1].missing") == 4


def test_the_c_parser_is_used_when_pyyaml_has_it():
    assert bool(yaml.__with_libyaml__) == load.C_LOADER


def test_problems_per_file_are_bounded():
    got = load.load_text("a: &a x\nl:\n" + "  - *a\n" * (load.MAX_PROBLEMS * 3))
    assert len(got.problems) == load.MAX_PROBLEMS + 1
    assert got.problems[-1].message.startswith(f"more than {load.MAX_PROBLEMS} problems; stopped reading at line")


# --- each step of the reader (issue 16 split load_text into them) ---------------------------


def test_a_merge_key_is_refused_and_left_out():
    got = load.load_text("a: 1\nb:\n  <<: {x: 1}\n  c: 2\n")
    [p] = got.problems
    assert (p.line, p.field) == (3, "b") and "merge key '<<'" in p.message
    assert got.data == {"a": 1, "b": {"c": 2}}


def test_a_collection_as_key_is_refused_with_its_value():
    got = load.load_text("a: 1\n? [x, y]\n: dropped\nb: 2\n")
    [p] = got.problems
    assert p.line == 2 and "a list used as a key" in p.message
    assert got.data == {"a": 1, "b": 2}


def test_a_tagged_collection_is_refused_but_read():
    got = load.load_text("a: !!omap\n  - x: 1\nb: !custom {y: 2}\n")
    assert [(p.line, p.field) for p in got.problems] == [(1, "a"), (3, "b")]
    assert "expected a plain list" in got.problems[0].message
    assert "expected a plain mapping" in got.problems[1].message
    assert got.data == {"a": [{"x": 1}], "b": {"y": 2}}


def test_a_second_document_stops_reading():
    got = load.load_text("a: 1\n---\nb: 2\n")
    [p] = got.problems
    assert p.line == 2 and "a second YAML document" in p.message and got.data is None


def test_string_tags_are_strings_as_values_never_as_keys():
    tags = frozenset({"!vault"})
    got = load.load_text("a: !vault |\n  $ANSIBLE_VAULT\n!vault k: 1\n", string_tags=tags)
    [p] = got.problems
    assert p.line == 3 and "unsupported YAML tag '!vault'" in p.message
    assert got.data == {"a": "$ANSIBLE_VAULT\n"}
    assert load.load_text("a: !vault x\n").problems  # not a string tag unless named


def test_scalars_typed_as_yaml_1_1_reads_them():
    got = load.load_text("a: 010\nb: 10\nc: 0x1f\nd: !!str 12\ne: 1.5\nf: ~\ng: yes\nh: 2024-02-29\ni: !!int x\n")
    assert got.data == {
        "a": 8,
        "b": 10,
        "c": 31,
        "d": "12",
        "e": 1.5,
        "f": None,
        "g": True,
        "h": dt.date(2024, 2, 29),
        "i": "x",
    }
    [p] = got.problems
    assert (p.line, p.field) == (9, "i") and "'x' at line 9 is not a valid int" in p.message
