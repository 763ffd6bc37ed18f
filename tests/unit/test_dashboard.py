"""The Kommunal-Dashboard rendered from a synthetic history and opened in headless Chromium.

The screenshots are kept under test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import model_hosts

from basisit import sitefacts
from basisit.report import dashboard
from basisit.validate import load_estate
from basisit.verify import history, results
from basisit.verify import waivers as wv

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TODAY = dt.date(2026, 11, 22)


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and we are not root: `sudo apt-get install chromium` (make setup does)")
    pytest.fail("chromium is missing although we run as root: `make setup` installs it (setup/apt-packages.txt)")


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium_or_skip(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _results(kommune: str, host: str, fails: int, passes: int, waived: int = 0) -> list[results.Result]:
    out = [
        results.Result(
            f"tests/compliance/test_base.py::test_p{i}[{host}]",
            "test_base::test_p",
            host,
            kommune,
            ["gs:SYS.1.3.A8"],
            "pass",
        )
        for i in range(passes)
    ]
    out += [
        results.Result(
            f"tests/compliance/test_base.py::test_sshd_option[{host}-passwordauthentication]",
            "test_base::test_sshd_option",
            host,
            kommune,
            ["gs:SYS.1.3.A8", "devsec:sshd-27"],
            "fail",
            message="sshd -T: passwordauthentication yes; expected no",
            reproduce=[
                f"basisit verify --kommune {kommune} -- -k 'test_sshd_option and {host}-passwordauthentication'",
                f"ssh -F /state/verify/ssh_config {host} 'sshd -T'",
            ],
        )
        for _ in range(min(fails, 1))
    ]
    out += [
        results.Result(
            f"tests/compliance/test_gateway.py::test_forward_default_deny[{host}-{i}]",
            "test_gateway::test_forward_default_deny",
            host,
            kommune,
            ["gs:NET.3.2.A2"],
            "fail",
            message="forward policy accept",
        )
        for i in range(max(0, fails - 1))
    ]
    out += [
        results.Result(f"w{i}", "test_base::test_sysctl", host, kommune, ["cis-deb12:3.3.1"], "waived")
        for i in range(waived)
    ]
    return out


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> tuple[Path, Path]:
    """A state dir with four nights of history for the model Kommunen and facts for three."""
    estate = load_estate(ROOT / "inventory")
    state = tmp_path_factory.mktemp("state")
    for slug in ("bexbach", "mettlach", "nalbach"):
        site = estate.site(slug)
        hosts = model_hosts(site)
        sitefacts.write(state, sitefacts.build(site, "lab", 1, hosts))
    db = history.path_in(state)
    nights = [  # (bexbach fails, mettlach fails, nalbach fails)
        (4, 6, 3),
        (2, 5, 1),
        (1, 3, 0),
        (0, 2, 0),
    ]
    for i, (b, m, n) in enumerate(nights):
        run = {
            "id": f"2026111{i}T013000Z",
            "started": f"2026-11-1{i}T01:30:00+00:00",
            "finished": f"2026-11-1{i}T01:40:00+00:00",
            "selection": ["bexbach", "mettlach", "nalbach"],
            "exit_status": 1,
            "report_dir": "/x",
        }
        res = _results("bexbach", "bexbach-gw", b, 12) + _results("mettlach", "mettlach-gw", m, 10, waived=1)
        res += _results("nalbach", "nalbach-gw", n, 14)
        history.append(db, run, res)
    waivers = [
        wv.Waiver.model_validate(
            {
                "id": "cis-deb12:3.3.1",
                "scope": {"kommune": "mettlach", "role": "gateway"},
                "justification": "Routing is the gateway's job; CIS 3.3.1 does not fit a router.",
                "approver": "eGo-Saar ISB (A. Beispiel)",
                "expires": (TODAY + dt.timedelta(days=5)).isoformat(),
            }
        )
    ]
    out = state / "reports" / "dashboard"
    dashboard.render(estate, state, out, waivers, TODAY)
    return state, out


def test_overview_content(site_dir):
    _, out = site_dir
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert 'id="adoption-line"' in html and "80 % adoption line" in html
    assert html.count('<tr id="k-') == 52
    assert re.search(r'id="k-nalbach".*?verified.*?100\.0 %', html, re.S)
    assert re.search(r'id="k-tholey".*?not realised', html, re.S)
    assert "NET.3.2" in html and "gs:NET.3.2.A2" in html


def test_kommune_page_content(site_dir):
    _, out = site_dir
    page = (out / "kommune" / "mettlach.html").read_text(encoding="utf-8")
    assert "gs:NET.3.2.A2" in page and "devsec:sshd-27" in page
    assert (
        "basisit verify --kommune mettlach -- -k &#39;test_sshd_option and mettlach-gw-passwordauthentication&#39;"
        in page
    )
    assert "ssh -F /state/verify/ssh_config mettlach-gw &#39;sshd -T&#39;" in page
    assert "cis-deb12:3.3.1" in page and "expires in 5 days" in page
    assert "mettlach-gw" in page and "10.160." in page


def test_sparkline_scales_and_target_line():
    s = dashboard.sparkline([0.0, 50.0, 100.0, None], width=104, height=28)
    pts = [tuple(map(float, p.split(","))) for p in s.points.split()]
    assert pts[0] == (2.0, 26.0) and pts[2][1] == 2.0 and len(pts) == 3
    assert s.target_y == round(26 - 0.8 * 24, 1) and s.last == 100.0


def test_pages_in_headless_chromium(site_dir, tmp_path):
    _, out = site_dir
    ARTIFACTS.mkdir(exist_ok=True)
    dom = chromium((out / "index.html").as_uri(), tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for name in ("Bexbach", "Mettlach", "Nalbach", "Tholey", "Saarbrücken"):
        assert name in text, f"{name} missing in the rendered DOM"
    assert 'id="adoption-line"' in text and "80 % adoption line" in text
    assert "gs:NET.3.2.A2" in text
    page = chromium((out / "kommune" / "mettlach.html").as_uri(), tmp_path / "profile", "--dump-dom")
    assert "devsec:sshd-27" in page.stdout and "expires in 5 days" in page.stdout

    for name, url in (
        ("dashboard-overview", out / "index.html"),
        ("dashboard-mettlach", out / "kommune" / "mettlach.html"),
    ):
        shot = ARTIFACTS / f"{name}.png"
        shot.unlink(missing_ok=True)
        p = chromium(
            url.as_uri(), tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars"
        )
        assert shot.exists() and shot.stat().st_size > 10_000, p.stderr[-2000:]


def test_unreachable_kommune_has_its_own_state(tmp_path):
    """A Kommune whose latest run could not reach a host: *unreachable* (not verified, not failing)."""
    estate = load_estate(ROOT / "inventory")
    state = tmp_path / "state"
    db = history.path_in(state)
    run = {"selection": ["bexbach", "nalbach"], "exit_status": 3, "report_dir": "/x", "finished": "x"}
    down = [
        results.Result(
            f"tests/compliance/test_base.py::test_p{i}[bexbach-dc1]",
            "test_base::test_p",
            "bexbach-dc1",
            "bexbach",
            ["gs:SYS.1.3.A8"],
            "unreachable",
            message="bexbach-dc1: unreachable over ssh at 10.160.212.74: Connection timed out (retried once)",
        )
        for i in range(7)
    ]
    history.append(
        db,
        run | {"id": "a", "started": "2026-11-20T01:30:00+00:00"},
        _results("bexbach", "bexbach-gw", 0, 5) + down + _results("nalbach", "nalbach-gw", 0, 5),
    )
    out = state / "reports" / "dashboard"
    dashboard.render(estate, state, out, [], TODAY)
    html = (out / "index.html").read_text(encoding="utf-8")
    row = re.search(r'<tr id="k-bexbach">.*?</tr>', html, re.S).group(0)
    assert '<span class="pill unreachable">unreachable</span>' in row and ">7</td>" in row
    assert re.search(r'<tr id="k-nalbach">.*?pill verified', html, re.S)
    data = dashboard.build(estate, state, [], TODAY)
    assert data["verified_ok"] == 1  # nalbach; bexbach is not verified while a host is unreachable
    assert data["adoption"][-1]["percent"] == round(100.0 / len(estate.kommunen), 1)
    page = (out / "kommune" / "bexbach.html").read_text(encoding="utf-8")
    assert "Unreachable hosts (1)" in page and "Connection timed out (retried once)" in page
    assert "7 unreachable" in page and "Nothing failed in the latest run, but not every host answered" in page
    assert "Failing checks (0)" in page


def _bumped_inventory(tmp_path: Path, version: int) -> Path:
    """A copy of the repository's inventory whose standard is at `version`."""
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory", inv)
    standard = inv / "standard.yaml"
    text = standard.read_text(encoding="utf-8")
    assert re.search(r"^version: 1$", text, re.M)
    standard.write_text(re.sub(r"^version: 1$", f"version: {version}", text, flags=re.M), encoding="utf-8")
    return inv


def test_kommunen_converged_at_an_older_standard_are_shown_behind(tmp_path):
    """The standard bumped to version 2: a Kommune whose last passed converge (the rollout ledger)
    was at version 1 is shown behind, with the wave rollout that brings it up; one converged at 2
    is current; one never converged by a rollout says so. The dashboard leaves the ledger as it was."""
    from basisit.rollout import Ledger, Plan, Rollout, ledger

    estate = load_estate(_bumped_inventory(tmp_path, 2))
    assert estate.standard.version == 2
    state = tmp_path / "state"
    path = ledger.path_in(state)
    lg = Ledger(path)
    noop = {s: (lambda site: None) for s in ("realise", "converge", "verify")}
    Rollout(Plan(["bexbach", "nalbach"]), noop, lg, version=1, backend="lab").run()
    Rollout(Plan(["nalbach"]), noop, lg, version=2, backend="lab").run()
    lg.close()
    before = path.read_bytes()

    data = dashboard.build(estate, state, [], TODAY)
    by = {k["slug"]: k["standard"] for k in data["kommunen"]}
    assert by["bexbach"] == {"version": 1, "current": 2, "behind": True}
    assert by["nalbach"] == {"version": 2, "current": 2, "behind": False}
    assert by["tholey"] == {"version": None, "current": 2, "behind": False}

    out = state / "reports" / "dashboard"
    dashboard.render(estate, state, out, [], TODAY)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<tr id="k-bexbach">.*?v1 \(behind\)', html, re.S)
    assert re.search(r'<tr id="k-nalbach">.*?<span class="ok">v2</span>', html, re.S)
    wave = estate.site("bexbach").kommune.wave
    page = (out / "kommune" / "bexbach.html").read_text(encoding="utf-8")
    assert "converged at version 1, the current is 2" in page
    assert f"basisit rollout --wave {wave}</code> converges it again" in page
    assert path.read_bytes() == before


def test_no_ledger_is_not_created_by_the_dashboard(tmp_path):
    estate = load_estate(ROOT / "inventory")
    state = tmp_path / "state"
    data = dashboard.build(estate, state, [], TODAY)
    assert {k["standard"]["version"] for k in data["kommunen"]} == {None}
    assert not (state / "ledger.sqlite").exists()
