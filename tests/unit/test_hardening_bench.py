"""bench/hardening.py: the Lynis report parser, the waiver profile (every skip-test has a reason),
the standalone copy it sends into a guest, and that the recorded waivers are today's."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "bench"))  # hardening imports bench/machine.py as the bench does
    try:
        spec = importlib.util.spec_from_file_location("bench_hardening", ROOT / "bench" / "hardening.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


REPORT = """# Lynis Report
report_version_major=1
lynis_version=3.0.8
hardening_index=73
lynis_tests_done=254
warning[]=PKGS-7392|Found one or more vulnerable packages.|-|-|
suggestion[]=KRNL-6000|One or more sysctl values differ from the scan profile and could be tweaked|net.ipv4.conf.all.rp_filter|Change sysctl value|
suggestion[]=AUTH-9286|Configure minimum password age in /etc/login.defs|-|-|
suggestion[]=AUTH-9286|Configure maximum password age in /etc/login.defs|-|-|
tests_skipped[]=KRNL-6000:KERNEL.SYSRQ
"""


def test_parse_report(bench):
    r = bench.parse_report(REPORT)
    assert r["hardening_index"] == 73 and r["tests_done"] == 254 and r["lynis_version"] == "3.0.8"
    assert r["warnings"] == [{"id": "PKGS-7392", "text": "Found one or more vulnerable packages.", "details": ""}]
    assert [s["id"] for s in r["suggestions"]] == ["KRNL-6000", "AUTH-9286", "AUTH-9286"]
    assert r["suggestions"][0]["details"] == "net.ipv4.conf.all.rp_filter"


def test_parse_report_refuses_an_incomplete_report(bench):
    with pytest.raises(ValueError, match="hardening_index"):
        bench.parse_report("lynis_version=3.0.8\nwarning[]=X-1234|x|-|-|\n")


def test_shipped_waivers_all_have_reasons(bench):
    w = bench.read_waivers()
    assert w and all(len(why) > 20 for why in w.values())


def test_each_waiver_has_only_the_reason_above_it(bench, tmp_path):
    p = tmp_path / "custom.prf"
    p.write_text("# one\nskip-test=KRNL-6000\n# two\nskip-test=AUTH-9286\nskip-test=NETW-2705\n", encoding="utf-8")
    assert bench.read_waivers(p) == {"KRNL-6000": "one", "AUTH-9286": "two", "NETW-2705": "two"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("skip-test=KRNL-6000\n", "has no reason"),
        ("# why\nskip-test=KRNL-6000\n\nskip-test=AUTH-9286\n", "AUTH-9286 has no reason"),
        ("# why\nskip-test=KRNL-6000\n# again\nskip-test=KRNL-6000\n", "waived twice"),
        ("# why\nskip-test=not a test\n", "not a Lynis test ID"),
        ("# why\nskip test KRNL-6000\n", "not a Lynis profile line"),
    ],
)
def test_waiver_without_reason_or_malformed_is_refused(bench, tmp_path, text, error):
    p = tmp_path / "custom.prf"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        bench.read_waivers(p)


def test_lynis_tarball_is_a_standalone_root_owned_copy(bench):
    if not Path("/usr/sbin/lynis").exists():
        pytest.skip("lynis is not installed on this machine (make setup installs it)")
    with tarfile.open(fileobj=io.BytesIO(bench.lynis_tarball()), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        prf = tar.extractfile(members["custom.prf"]).read().decode()
    assert {"lynis", "include/consts", "include/functions", "db/languages/en", "default.prf", "custom.prf"} <= set(
        members
    )
    assert "plugins" in members
    assert all(m.uid == 0 and m.gid == 0 and not m.mode & 0o022 for m in members.values())
    assert members["lynis"].mode & 0o100 and not members["include/functions"].mode & 0o111
    assert prf == (ROOT / "bench" / "lynis" / "custom.prf").read_text(encoding="utf-8")
    with tarfile.open(fileobj=io.BytesIO(bench.lynis_tarball(None)), mode="r:gz") as tar:
        assert "skip-test" not in tar.extractfile("custom.prf").read().decode()


def test_recorded_waivers_are_todays(bench):
    """bench/results/hardening.json names the waivers it ran with: they are the profile's today."""
    res = ROOT / "bench" / "results" / "hardening.json"
    if not res.exists():
        pytest.skip("bench/hardening.py has not been run yet")
    doc = json.loads(res.read_text(encoding="utf-8"))
    assert doc["waivers"] == bench.read_waivers(), "bench/results/hardening.json is stale: run bench/hardening.py"
