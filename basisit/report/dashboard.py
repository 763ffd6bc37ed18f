"""The Kommunal-Dashboard: static HTML from the history database, the model and the waivers.

`render(...)` writes `index.html` (the Land overview) and `kommune/<slug>.html` (one page per
Kommune) into the output directory. Each Kommune's latest `basisit drift` run is shown too (a column in
the overview; on its page "drift: N changes on M hosts" and every redacted diff). A Kommune whose latest run had unreachable hosts is shown
as *unreachable* (its own colour): not verified, and not failing either. No server, no JavaScript, no assets from the internet: the
trend lines are inline SVG.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import jinja2

from basisit import sitefacts
from basisit.model import Estate
from basisit.rollout import ledger as rollout_ledger
from basisit.verify import controls, history
from basisit.verify import waivers as wv

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "dashboard"
ADOPTION_TARGET = 80  # percent: the state funds only what at least 80 % of the Kommunen adopt
TREND_RUNS = 14


@dataclass(frozen=True)
class Spark:
    """An inline SVG polyline of values 0..100 (None = no evaluable checks that night)."""

    points: str
    last: float | None
    target_y: float
    width: int
    height: int
    dots: tuple[tuple[float, float], ...]


def sparkline(values: list[float | None], width: int = 120, height: int = 28, target: float = ADOPTION_TARGET) -> Spark:
    n = len(values)
    pts = []
    for i, v in enumerate(values):
        if v is None:
            continue
        x = width / 2 if n == 1 else i * (width - 4) / (n - 1) + 2
        y = height - 2 - (v / 100.0) * (height - 4)
        pts.append((round(x, 1), round(y, 1)))
    ty = round(height - 2 - (target / 100.0) * (height - 4), 1)
    last = next((v for v in reversed(values) if v is not None), None)
    return Spark(" ".join(f"{x},{y}" for x, y in pts), last, ty, width, height, tuple(pts))


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _adoption_trend(db: Path, slugs: list[str]) -> list[dict]:
    """Per run (oldest first, last TREND_RUNS): share of all Kommunen verified without a failing check
    (every host reached)."""
    status: dict[str, int] = {}
    out = []
    for run in history.runs(db):
        for k, row in _run_kommunen(db, run["id"]).items():
            status[k] = row["fail"] + row["unreachable"]
        ok = sum(1 for s in slugs if s in status and status[s] == 0)
        out.append({"run": run["id"], "started": run["started"], "percent": round(100.0 * ok / len(slugs), 1)})
    return out[-TREND_RUNS:]


def _run_kommunen(db: Path, run_id: str) -> dict[str, dict]:
    with history.connect(db) as con:
        rows = con.execute("SELECT * FROM run_kommunen WHERE run_id = ?", (run_id,)).fetchall()
    return {r["kommune"]: dict(r) for r in rows}


def build(estate: Estate, state: Path, waiver_list: list[wv.Waiver], today: dt.date) -> dict:
    """Everything the templates show, as plain data."""
    db = history.path_in(state)
    latest = history.latest(db)
    drift = history.latest_drift(db)
    cloud = history.latest_drift(db, "cloud")
    slugs = list(estate.kommunen)
    converged_at = rollout_ledger.converged_versions(rollout_ledger.path_in(state))
    current = estate.standard.version
    kommunen = []
    families: dict[str, dict] = defaultdict(lambda: {"checks": 0, "kommunen": set(), "controls": set()})
    for slug, site in estate.kommunen.items():
        k = site.kommune
        facts = sitefacts.read(state, slug)
        row = latest.get(slug)
        if row is not None and row["unreachable"] > 0:
            rollout = "unreachable"
        elif row is not None and row["total"] > 0:
            rollout = "verified"
        elif facts is not None:
            rollout = "realised"
        else:
            rollout = "not realised"
        trend = history.trend(db, slug, TREND_RUNS)
        results = history.results_of(db, row["run_id"], slug) if row else []
        failing = [r for r in results if r["state"] == "fail"]
        for r in failing:
            for c in r["controls"] or ["(no control id)"]:
                f = families[controls.family(c) if ":" in c else c]
                f["checks"] += 1
                f["kommunen"].add(slug)
                f["controls"].add(c)
        kw = [wv.to_dict(w, today) for w in waiver_list if w.scope.kommune in (None, slug) and _reaches(w, site)]
        kommunen.append(
            {
                "slug": slug,
                "name": site.name,
                "ags": k.ags if k else "",
                "district": k.district if k else "",
                "wave": str(k.wave) if k else "",
                "size": site.size,
                "domain": site.domain,
                "rollout": rollout,
                "compliance": row["compliance"] if row else None,
                "counts": {s: (row[s] if row else 0) for s in ("pass", "fail", "waived", "na", "unreachable", "total")},
                "last_run": row["run_id"] if row else None,
                "last_started": row["started"] if row else None,
                "spark": sparkline([t["compliance"] for t in trend]),
                "trend": trend,
                "failing": failing,
                "waived": [r for r in results if r["state"] == "waived"],
                "na": [r for r in results if r["state"] == "na"],
                "unreachable": _unreachable_hosts(results),
                "waivers": kw,
                "standard": _standard_of(converged_at.get(slug), current),
                "drift": _drift_of(drift.get(slug)),
                "cloud_drift": _drift_of(cloud.get(slug)),
                "zones": [z.to_dict() for z in site.zones.values()],
                "hosts": [h.to_dict() | {"realised": bool(facts and h.name in facts["hosts"])} for h in site.hosts],
            }
        )
    realised = sum(1 for k in kommunen if k["rollout"] != "not realised")
    verified_ok = sum(1 for k in kommunen if k["rollout"] == "verified" and k["counts"]["fail"] == 0)
    adoption = _adoption_trend(db, slugs)
    fam = sorted(
        (
            {
                "family": name,
                "checks": f["checks"],
                "kommunen": sorted(f["kommunen"]),
                "controls": sorted(f["controls"]),
            }
            for name, f in families.items()
        ),
        key=lambda f: (-f["checks"], f["family"]),
    )
    return {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "today": today.isoformat(),
        "standard_version": estate.standard.version,
        "target": ADOPTION_TARGET,
        "kommunen": kommunen,
        "total": len(kommunen),
        "realised": realised,
        "realised_pct": round(100.0 * realised / len(kommunen), 1) if kommunen else 0.0,
        "verified_ok": verified_ok,
        "verified_ok_pct": round(100.0 * verified_ok / len(kommunen), 1) if kommunen else 0.0,
        "adoption": adoption,
        "adoption_spark": sparkline([a["percent"] for a in adoption], width=480, height=120),
        "families": fam,
        "retired": _retired(estate, db),
        "expiring": [
            w | {"kommune": w["scope"].get("kommune", "")}
            for w in (wv.to_dict(x, today) for x in waiver_list)
            if w["expired"] or w["expiring_soon"]
        ],
    }


def _standard_of(version: int | None, current: int) -> dict:
    """The standard version a Kommune was last converged at (the rollout ledger) against the
    current one: `behind` when older, so the next rollout of its wave converges it again."""
    return {"version": version, "current": current, "behind": version is not None and version < current}


def _retired(estate: Estate, db: Path) -> list[dict]:
    """The retired Kommunen (`status: retired`), with what `basisit retire` recorded of each."""
    done = history.retired(db)
    return [
        {
            "slug": slug,
            "name": site.name,
            **{k: done.get(slug, {}).get(k) for k in ("retired", "backend", "keep_until", "detail")},
        }
        for slug, site in sorted(estate.retired.items())
    ]


def _drift_of(row: dict | None) -> dict | None:
    """The latest drift run of a site, for the templates: counts, label and the items per kind."""
    if row is None:
        return None
    items = row["items"]
    changes = [i for i in items if i["kind"] == "change"]
    n, h = row["changes"], row["hosts"]
    return {
        "run_id": row["run_id"],
        "started": row["started"],
        "changes": n,
        "hosts": h,
        "label": f"{n} change{'s' if n != 1 else ''} on {h} host{'s' if h != 1 else ''}",
        "failed": [i for i in items if i["kind"] == "failed"],
        "unreachable": [i for i in items if i["kind"] == "unreachable"],
        "error": row["error"],
        "diffs": changes,
        "clean": n == 0 and not row["failed"] and not row["unreachable"] and not row["error"],
    }


def _unreachable_hosts(results: list[dict]) -> list[dict]:
    """Per host whose checks were unreachable: how many, and why (the first message)."""
    by: dict[str, dict] = {}
    for r in results:
        if r["state"] == "unreachable":
            h = by.setdefault(r["host"], {"host": r["host"], "checks": 0, "message": r["message"]})
            h["checks"] += 1
    return sorted(by.values(), key=lambda h: h["host"])


def _reaches(w: wv.Waiver, site) -> bool:
    return any(wv.in_scope(w, h.name, site.slug, h.roles) for h in site.hosts)


def render(estate: Estate, state: Path, out: Path, waiver_list: list[wv.Waiver], today: dt.date | None = None) -> Path:
    """Write the dashboard; returns the path of index.html."""
    today = today or dt.date.today()
    data = build(estate, state, waiver_list, today)
    env = _env()
    out.mkdir(parents=True, exist_ok=True)
    (out / "kommune").mkdir(exist_ok=True)
    (out / "index.html").write_text(env.get_template("index.html.j2").render(**data), encoding="utf-8")
    page = env.get_template("kommune.html.j2")
    for k in data["kommunen"]:
        (out / "kommune" / f"{k['slug']}.html").write_text(page.render(k=k, **data), encoding="utf-8")
    return out / "index.html"
