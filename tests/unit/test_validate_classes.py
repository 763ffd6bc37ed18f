"""The classes of broken inventories that `basisit inventory validate` once accepted or reported
badly (issue 13), each tried as a user would: exit status 2, one line per error naming file,
line, Kommune and field, every error at once, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, edit

from basisit import load, sitefacts
from basisit.validate import load_estate


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def validate(inv, run, tmp_path):
    """Run `basisit inventory validate` on the copy; check what every bad input must satisfy."""

    def _validate(*extra: str) -> list[str]:
        before = snapshot(tmp_path)
        rc, out, err = run("--inventory", inv, "--state", tmp_path / "state", "inventory", "validate", *extra)
        assert rc == 2, (out, err)
        assert out == "" and "Traceback" not in err
        assert err.rstrip().endswith("nothing was applied")
        assert snapshot(tmp_path) == before  # nothing written, no state directory made
        return err.splitlines()[:-1]

    return _validate


def one(lines: list[str], path: Path, line: int | None, kommune: str, field: str, *words: str) -> str:
    """The error line for (file, line, Kommune, field) that contains every word."""
    where = f"{path}:{line}: " if line else f"{path}"
    hits = [ln for ln in lines if ln.startswith(where) and f"[{kommune}] {field}: " in ln]
    hits = [ln for ln in hits if all(w in ln for w in words)]
    assert hits, "\n".join(lines)
    return hits[0]


def line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in ln)


# --- silent accepts ------------------------------------------------------------------------


def test_duplicate_key_in_a_kommune_file(inv, validate):
    path = inv / "kommunen" / "nalbach.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "net_index: 7\n", encoding="utf-8")
    last = len(path.read_text(encoding="utf-8").splitlines())
    first = line_of(path, "net_index: 42")
    lines = validate()
    one(lines, path, last, "nalbach", "net_index", "duplicate key 'net_index'", f"first at line {first}")


def test_duplicate_key_in_the_standard_and_in_an_endpoint(inv, validate):
    std = inv / "standard.yaml"
    std.write_text(std.read_text(encoding="utf-8") + "version: 2\n", encoding="utf-8")
    path = inv / "kommunen" / "tholey.yaml"
    text = path.read_text(encoding="utf-8").replace("index: 1,", "index: 1, index: 5,", 1)
    path.write_text(text, encoding="utf-8")
    lines = validate()
    one(lines, std, None, "standard", "version", "duplicate key 'version'")
    one(lines, path, line_of(path, "index: 5"), "tholey", "endpoints[0].index", "duplicate key 'index'")


def test_size_classes_out_of_order(inv, validate):
    def change(d):
        d["size_classes"]["M"]["max_population"] = 5000

    edit(inv / "standard.yaml", change)
    lines = validate()
    msg = one(lines, inv / "standard.yaml", None, "standard", "size_classes.M.max_population", "could never apply")
    assert "5000" in msg and "9999" in msg


def test_size_classes_leaving_populations_without_a_class(inv, validate):
    def change(d):
        d["size_classes"]["L"]["max_population"] = 200000

    edit(inv / "standard.yaml", change)
    one(validate(), inv / "standard.yaml", None, "standard", "size_classes.L.max_population", "without a size class")


@pytest.mark.parametrize(
    "name, words",
    [
        ("nalbach.yml", "rename it to nalbach.yaml"),
        ("nalbach.YAML", "rename it to nalbach.yaml"),
        ("nalbach.yaml.bak", "not a Kommune file"),
        ("nalbach.yaml~", "not a Kommune file"),
    ],
)
def test_kommune_file_with_another_extension(inv, validate, name, words):
    src = inv / "kommunen" / "nalbach.yaml"
    dst = inv / "kommunen" / name
    src.rename(dst)
    lines = validate()
    assert any(ln.startswith(f"{dst}: ") and words in ln for ln in lines), lines


def test_hidden_files_in_kommunen_are_ignored(inv, run):
    (inv / "kommunen" / ".nalbach.yaml.swp").write_bytes(b"\0\1binary")
    (inv / "kommunen" / ".gitkeep").write_text("", encoding="utf-8")
    rc, out, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 0, err
    assert out.startswith("52 Kommunen")


def test_ad_domain_outside_the_standards_suffix(inv, validate):
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(ad_domain="nalbach.example.org"))
    path = inv / "kommunen" / "nalbach.yaml"
    msg = one(validate(), path, line_of(path, "ad_domain:"), "nalbach", "ad_domain", "not under the standard's suffix")
    assert "'nalbach.basisit.internal'" in msg


def test_same_asset_tag_on_two_endpoints(inv, validate):
    tag = load_estate(inv).kommunen["bexbach"].kommune.endpoints[0].asset_tag

    def change(d):
        d["endpoints"][1]["asset_tag"] = tag

    edit(inv / "kommunen" / "nalbach.yaml", change)
    edit(inv / "kommunen" / "tholey.yaml", change)
    lines = validate()
    nal = inv / "kommunen" / "nalbach.yaml"
    one(lines, nal, line_of(nal, tag), "nalbach", "endpoints[1].asset_tag", "duplicate asset tag", "bexbach", "tholey")
    one(lines, inv / "kommunen" / "bexbach.yaml", None, "bexbach", "endpoints[0].asset_tag", "nalbach endpoints[1]")


def test_same_asset_tag_twice_in_one_kommune(inv, validate):
    def change(d):
        d["endpoints"][1]["asset_tag"] = d["endpoints"][0]["asset_tag"].lower()

    edit(inv / "kommunen" / "nalbach.yaml", change)
    path = inv / "kommunen" / "nalbach.yaml"
    one(validate(), path, line_of(path, "nal-it-1001"), "nalbach", "endpoints[1].asset_tag", "also endpoints[0]")


@pytest.fixture
def ansible_files(inv):
    """The copy with what Ansible reads too (the `inv` fixture leaves them out)."""
    import shutil

    shutil.copytree(ROOT / "inventory" / "group_vars", inv / "group_vars")
    shutil.copy(ROOT / "inventory" / "basisit.yml", inv / "basisit.yml")
    return inv


def test_group_vars_with_broken_yaml(ansible_files, validate):
    path = ansible_files / "group_vars" / "all" / "basisit_image.yml"
    path.write_text(path.read_text(encoding="utf-8") + "broken: [unclosed\n", encoding="utf-8")
    one(validate(), path, line_of(path, "broken:"), "-", "-", "YAML syntax error", "not closed")


def test_group_vars_with_a_python_tag(ansible_files, validate):
    path = ansible_files / "group_vars" / "all" / "extra.yml"
    path.write_text("basisit_x: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    one(validate(), path, 1, "-", "basisit_x", "unsupported YAML tag", "!!python/object/apply:os.system")


def test_group_vars_may_use_ansibles_own_tags(ansible_files, run):
    path = ansible_files / "group_vars" / "all" / "extra.yml"
    path.write_text(
        "basisit_x: !unsafe '{{ not templated }}'\nbasisit_y: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n", encoding="utf-8"
    )
    rc, out, err = run("--inventory", ansible_files, "inventory", "validate")
    assert rc == 0 and out.startswith("52 Kommunen"), err


def test_group_vars_for_an_unknown_group_and_bad_names(ansible_files, validate):
    (ansible_files / "group_vars" / "nalbch.yml").write_text("x: 1\n", encoding="utf-8")
    (ansible_files / "group_vars" / "nalbach.yml").write_text("bad-name: 1\n", encoding="utf-8")
    (ansible_files / "group_vars" / "notes.txt").write_text("x\n", encoding="utf-8")
    lines = validate()
    assert any("nalbch.yml: [-] -: no group 'nalbch'" in ln for ln in lines), lines
    one(lines, ansible_files / "group_vars" / "nalbach.yml", 1, "-", "bad-name", "not a valid Ansible variable name")
    assert any("notes.txt: [-] -: Ansible ignores this file" in ln for ln in lines), lines


def test_basisit_yml_naming_another_plugin(ansible_files, validate):
    path = ansible_files / "basisit.yml"
    path.write_text("plugin: basisit.inventory\ninventory_dir: ../elsewhere\ncolour: blue\n", encoding="utf-8")
    lines = validate()
    one(lines, path, 1, "-", "plugin", "not the basisit inventory plugin", "0 hosts")
    one(lines, path, 2, "-", "inventory_dir", "not this directory")
    one(lines, path, 3, "-", "colour", "unknown option")


def test_stray_file_at_the_top_of_the_inventory(inv, validate):
    (inv / "nalbach.yaml").write_text("slug: nalbach\n", encoding="utf-8")
    lines = validate()
    assert any(
        ln.startswith(f"{inv / 'nalbach.yaml'}: [-] -: unknown entry") and "kommunen/nalbach.yaml" in ln for ln in lines
    )


# --- all errors at once ----------------------------------------------------------------------


def test_every_error_of_one_kommune_file(inv, validate):
    def change(d):
        del d["netbios"]  # schema error
        d["ags"] = "123"  # rule errors, still checked
        d["ad_domain"] = "nalbach.example.org"
        d["endpoints"][1]["os"] = "windows-xp"
        d["endpoints"][0]["hostname"] = "Bad_Host!"

    path = inv / "kommunen" / "nalbach.yaml"
    edit(path, change)
    lines = validate()
    one(lines, path, None, "nalbach", "netbios", "required field is missing")
    one(lines, path, None, "nalbach", "ags", "not 8 digits")
    one(lines, path, None, "nalbach", "ad_domain", "not under")
    one(lines, path, None, "nalbach", "endpoints[1].os", "unknown OS")
    one(lines, path, None, "nalbach", "endpoints[0].hostname", "not a valid hostname")


def test_a_broken_standard_hides_no_kommune_error(inv, validate):
    (inv / "standard.yaml").write_text("version: [1\n", encoding="utf-8")
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(ags="123", netbios="bexbach"))
    edit(inv / "kommunen" / "tholey.yaml", lambda d: d.update(net_index=53))  # bexbach's
    lines = validate()
    one(lines, inv / "standard.yaml", 1, "standard", "-", "YAML syntax error")
    nal = inv / "kommunen" / "nalbach.yaml"
    one(lines, nal, line_of(nal, "ags:"), "nalbach", "ags", "not 8 digits")
    one(lines, inv / "kommunen" / "nalbach.yaml", None, "nalbach", "netbios", "not a valid NetBIOS")
    one(lines, inv / "kommunen" / "tholey.yaml", None, "tholey", "net_index", "duplicate net_index")


def test_a_standard_with_rule_errors_still_judges_the_kommunen(inv, validate):
    edit(inv / "standard.yaml", lambda d: d["services"]["lockout"].update(observation_window_minutes=60))
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(wave=9))
    lines = validate()
    one(lines, inv / "standard.yaml", None, "standard", "services.lockout.observation_window_minutes", "exceeds")
    nal = inv / "kommunen" / "nalbach.yaml"
    one(lines, nal, line_of(nal, "wave:"), "nalbach", "wave", "unknown wave 9")


# --- resource exhaustion -------------------------------------------------------------------

BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(97 + n)}: &{chr(97 + n)} [" + ",".join([f"*{chr(96 + n)}"] * 9) + "]" for n in range(1, 9)]
    + ["slug: nalbach"]
)


def test_alias_bomb_is_refused_with_short_messages(inv):
    path = inv / "kommunen" / "nalbach.yaml"
    path.write_text(BOMB + "\n", encoding="utf-8")
    assert len(path.read_bytes()) < 600
    env = {**os.environ, "BASISIT_INVENTORY": str(inv)}
    p = subprocess.run(
        [sys.executable, "-m", "basisit.cli", "inventory", "validate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{path}:2: [nalbach] b[0]: YAML alias *a at line 2" in p.stderr
    assert max(len(ln) for ln in p.stderr.splitlines()) < 400  # nothing expanded, nothing repr()ed whole


def test_oversized_file_is_refused(inv, validate):
    path = inv / "kommunen" / "nalbach.yaml"
    with path.open("ab") as f:
        f.truncate(load.MAX_BYTES + 1)
    one(validate(), path, None, "nalbach", "-", "larger than the limit", "refused before parsing")


def test_long_values_are_truncated_in_messages(inv, validate):
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(netbios="N" * 50_000, colour="x" * 50_000))
    edit(inv / "kommunen" / "tholey.yaml", lambda d: d.update({"k" * 50_000: 1, "wave": "w" * 50_000}))
    lines = validate()
    assert lines and all(len(ln) < 400 for ln in lines)


# --- positions -----------------------------------------------------------------------------


def test_impossible_date_names_field_and_line(inv, validate):
    path = inv / "kommunen" / "nalbach.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("2024-12-31", "2024-02-30"), encoding="utf-8")
    lines = validate()
    one(lines, path, line_of(path, "date:"), "nalbach", "population.date", "'2024-02-30'", "not a valid date")
    assert len(lines) == 1  # not also "invalid date" from the schema


def test_unclosed_quote_is_reported_where_it_opens(inv, validate):
    path = inv / "kommunen" / "nalbach.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("name: Nalbach", "name: 'Nalbach"), encoding="utf-8")
    n = line_of(path, "name:")
    one(validate(), path, n, "nalbach", "-", f"line {n}, column 7", "not closed")


def test_schema_errors_carry_lines(inv, validate):
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(net_index="zwölf"))
    path = inv / "kommunen" / "nalbach.yaml"
    one(validate(), path, line_of(path, "net_index:"), "nalbach", "net_index", "valid integer")


# --- the command line ----------------------------------------------------------------------


def test_inventory_option_after_the_subcommand(inv, validate, run):
    edit(inv / "kommunen" / "nalbach.yaml", lambda d: d.update(ags="123"))
    rc, _, err = run("inventory", "validate", "--inventory", inv)
    assert rc == 2 and "[nalbach] ags:" in err
    rc, out, _ = run("ipplan", "--kommune", "nalbach", "--inventory", ROOT / "inventory", "--format", "csv")
    assert rc == 0 and "nalbach" in out


def test_state_option_after_the_subcommand(run, tmp_path):
    site = load_estate(ROOT / "inventory").kommunen["nalbach"]
    hosts = {
        "nalbach-gw": {
            "roles": ["gateway"],
            "addresses": {"management": "10.160.168.1"},
            "ansible_host": "10.160.168.1",
        }
    }
    doc = sitefacts.build(site, "cloud", 1, hosts, {"user": "root"})
    src = sitefacts.write(tmp_path / "src", doc)
    rc, _, err = run("facts", "import", "--kommune", "nalbach", src, "--state", tmp_path / "after")
    assert rc == 0, err
    assert (tmp_path / "after" / "facts" / "nalbach.json").is_file()


def test_every_command_takes_the_global_options_after_it():
    from basisit import cli

    cli._load_extensions()
    parser = cli.build_parser()
    for argv in (
        ["inventory", "validate"],
        ["inventory", "show", "nalbach"],
        ["ipplan"],
        ["facts", "import", "--kommune", "x", "-"],
        ["stacks", "config"],
        ["verify", "--all"],
        ["rollout", "--all"],
        ["lab", "status"],
    ):
        try:
            args = parser.parse_args([*argv, "--inventory", "/i", "--state", "/s"])
        except SystemExit:
            pytest.fail(f"{argv} refuses --inventory/--state after the subcommand")
        assert (str(args.inventory), args.state) == ("/i", "/s"), argv
        args = parser.parse_args(["--inventory", "/j", "--state", "/t", *argv])
        assert (str(args.inventory), args.state) == ("/j", "/t"), argv


def test_waivers_file_is_checked_too(inv, validate, run):
    path = inv / "waivers.yaml"
    path.write_text("waivers: []\nwaivers: []\n", encoding="utf-8")
    one(validate(), path, 2, "-", "waivers", "duplicate key 'waivers'")
    path.write_text("waivers:\n  - {id: gs:SYS.1.3.A8, scope: {kommune: nalbach}, expires: soon}\n", encoding="utf-8")
    rc, out, err = run("--inventory", inv, "inventory", "validate")
    assert rc == 2 and out == "" and "justification" in err and "Traceback" not in err
