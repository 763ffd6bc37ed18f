"""The history database (`<state>/history.sqlite`): every run and every result, for trends.

Tables: `runs` (one row per `basisit verify`), `results` (one row per check and host, with its
state and control ids), `run_kommunen` (per run and Kommune: counts and compliance %). The state
`unreachable` (the host did not answer over SSH) is counted apart from pass and fail; databases
written before it existed are migrated when opened. Runs limited by pytest arguments
(`basisit verify … -- -k NAME`) are recorded as partial and left out of trends and the dashboard.

`basisit drift` adds its own tables: `drift_runs` (one row per drift run), `drift_kommunen`
(per run and site: changes, hosts that drifted, failed tasks, unreachable hosts, seconds) and
`drift_changes` (every task that would change, failed or found its host unreachable, with
host, resource and the redacted diff).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from basisit.verify.results import Result, compliance, per_kommune, summary

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,          -- run timestamp, e.g. 20261122T013000Z
    started TEXT NOT NULL,        -- ISO 8601 UTC
    finished TEXT NOT NULL,
    selection TEXT NOT NULL,      -- JSON list of Kommune slugs
    total INTEGER NOT NULL, pass INTEGER NOT NULL, fail INTEGER NOT NULL,
    waived INTEGER NOT NULL, na INTEGER NOT NULL,
    compliance REAL,
    exit_status INTEGER NOT NULL,
    report_dir TEXT NOT NULL,
    partial INTEGER NOT NULL DEFAULT 0,  -- 1: a run limited by pytest arguments (-k …); not a trend point
    unreachable INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(id),
    kommune TEXT NOT NULL,
    host TEXT NOT NULL,
    test_id TEXT NOT NULL,
    nodeid TEXT NOT NULL,
    controls TEXT NOT NULL,       -- space-separated control ids
    state TEXT NOT NULL CHECK (state IN ('pass', 'fail', 'waived', 'na', 'unreachable')),
    duration REAL NOT NULL,
    message TEXT NOT NULL,
    reproduce TEXT NOT NULL,      -- JSON list of commands
    waiver TEXT                   -- JSON of the waiver that applied, or NULL
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id, kommune);
CREATE TABLE IF NOT EXISTS run_kommunen (
    run_id TEXT NOT NULL REFERENCES runs(id),
    kommune TEXT NOT NULL,
    total INTEGER NOT NULL, pass INTEGER NOT NULL, fail INTEGER NOT NULL,
    waived INTEGER NOT NULL, na INTEGER NOT NULL,
    compliance REAL,
    unreachable INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, kommune)
);
CREATE TABLE IF NOT EXISTS drift_runs (
    id TEXT PRIMARY KEY,          -- drift run timestamp
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    selection TEXT NOT NULL,      -- JSON list of sites
    changes INTEGER NOT NULL,     -- tasks that would change, all sites
    hosts INTEGER NOT NULL,       -- hosts with at least one change
    exit_status INTEGER NOT NULL,
    report_dir TEXT NOT NULL,
    seconds REAL NOT NULL,
    source TEXT NOT NULL DEFAULT 'hosts'  -- 'hosts' (ansible check mode) or 'cloud' (Pulumi refresh preview)
);
CREATE TABLE IF NOT EXISTS drift_kommunen (
    run_id TEXT NOT NULL REFERENCES drift_runs(id),
    kommune TEXT NOT NULL,
    changes INTEGER NOT NULL,
    hosts INTEGER NOT NULL,       -- hosts that drifted
    failed INTEGER NOT NULL,      -- tasks that failed in check mode
    unreachable INTEGER NOT NULL, -- hosts that did not answer
    error TEXT,                   -- the run did not complete (NULL: it did)
    seconds REAL NOT NULL,
    source TEXT NOT NULL DEFAULT 'hosts',
    PRIMARY KEY (run_id, kommune)
);
CREATE TABLE IF NOT EXISTS drift_changes (
    run_id TEXT NOT NULL REFERENCES drift_runs(id),
    kommune TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('change', 'failed', 'unreachable')),
    host TEXT NOT NULL,
    task TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,       -- file, unit, user, … the task manages ('' when no_log)
    item TEXT NOT NULL,
    no_log INTEGER NOT NULL,      -- 1: only the task's name is kept
    diff TEXT NOT NULL,           -- unified diff, redacted
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_changes_run ON drift_changes(run_id, kommune);
CREATE TABLE IF NOT EXISTS retired (
    kommune TEXT PRIMARY KEY,     -- retired by `basisit retire` (its file says status: retired)
    retired TEXT NOT NULL,        -- ISO 8601 UTC
    backend TEXT NOT NULL,
    keep_until TEXT NOT NULL,     -- its backups are kept read-only until this date
    detail TEXT NOT NULL          -- what was removed and kept
);
"""

RESULTS_COLUMNS = "run_id, kommune, host, test_id, nodeid, controls, state, duration, message, reproduce, waiver"


def _migrate(con: sqlite3.Connection) -> None:
    """Bring a database written by an older basisit up to SCHEMA (in one transaction: a second
    run opening the database at the same time waits, then finds it migrated)."""
    con.execute("BEGIN IMMEDIATE")
    for table in ("drift_runs", "drift_kommunen"):  # drift tables from before cloud drift
        if "source" not in {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}:
            con.execute(f"ALTER TABLE {table} ADD COLUMN source TEXT NOT NULL DEFAULT 'hosts'")
    cols = {r["name"] for r in con.execute("PRAGMA table_info(runs)")}
    if "partial" not in cols:  # databases written before runs could be partial
        con.execute("ALTER TABLE runs ADD COLUMN partial INTEGER NOT NULL DEFAULT 0")
    if "unreachable" not in cols:
        con.execute("ALTER TABLE runs ADD COLUMN unreachable INTEGER NOT NULL DEFAULT 0")
    if "unreachable" not in {r["name"] for r in con.execute("PRAGMA table_info(run_kommunen)")}:
        con.execute("ALTER TABLE run_kommunen ADD COLUMN unreachable INTEGER NOT NULL DEFAULT 0")
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'results'").fetchone()
    if "'unreachable'" not in sql:  # the state CHECK constraint predates `unreachable`: rebuild the table
        con.execute("ALTER TABLE results RENAME TO results_old")
        con.execute("DROP INDEX IF EXISTS results_run")
        for stmt in SCHEMA.split(";"):  # not executescript: that would commit half-way
            if stmt.strip().startswith(
                ("CREATE TABLE IF NOT EXISTS results ", "CREATE INDEX IF NOT EXISTS results_run ")
            ):
                con.execute(stmt)
        con.execute(f"INSERT INTO results ({RESULTS_COLUMNS}) SELECT {RESULTS_COLUMNS} FROM results_old")
        con.execute("DROP TABLE results_old")
    con.commit()


def path_in(state: Path) -> Path:
    return state / "history.sqlite"


@contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        con.executescript(SCHEMA)
        _migrate(con)
        yield con
        con.commit()
    finally:
        con.close()


def append(db: Path, run: dict, results: list[Result]) -> None:
    """Record one run (run: id, started, finished, selection, exit_status, report_dir)."""
    s = summary(results)
    with connect(db) as con:
        con.execute(
            "INSERT INTO runs (id, started, finished, selection, total, pass, fail, waived, na, compliance, "
            "exit_status, report_dir, partial, unreachable) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run["id"],
                run["started"],
                run["finished"],
                json.dumps(run["selection"]),
                s["total"],
                s["pass"],
                s["fail"],
                s["waived"],
                s["na"],
                compliance(s),
                run["exit_status"],
                run["report_dir"],
                int(bool(run.get("partial"))),
                s["unreachable"],
            ),
        )
        con.executemany(
            f"INSERT INTO results ({RESULTS_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    run["id"],
                    r.kommune,
                    r.host,
                    r.test_id,
                    r.nodeid,
                    " ".join(r.controls),
                    r.state,
                    r.duration,
                    r.message,
                    json.dumps(r.reproduce),
                    json.dumps(r.waiver) if r.waiver else None,
                )
                for r in results
            ],
        )
        kommunen = per_kommune(results)
        for k in run["selection"]:
            kommunen.setdefault(
                k, {"total": 0, "pass": 0, "fail": 0, "waived": 0, "na": 0, "unreachable": 0, "compliance": None}
            )
        con.executemany(
            "INSERT INTO run_kommunen (run_id, kommune, total, pass, fail, waived, na, compliance, unreachable) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    run["id"],
                    k,
                    c["total"],
                    c["pass"],
                    c["fail"],
                    c["waived"],
                    c["na"],
                    c["compliance"],
                    c["unreachable"],
                )
                for k, c in kommunen.items()
            ],
        )


def trend(db: Path, kommune: str, last: int = 14) -> list[dict]:
    """The Kommune's compliance over its most recent runs, oldest first."""
    if not db.exists():
        return []
    with connect(db) as con:
        rows = con.execute(
            "SELECT rk.run_id, r.started, rk.compliance, rk.pass, rk.fail, rk.waived, rk.na, rk.unreachable "
            "FROM run_kommunen rk "
            "JOIN runs r ON r.id = rk.run_id WHERE rk.kommune = ? AND r.partial = 0 ORDER BY r.started DESC, rk.run_id DESC LIMIT ?",
            (kommune, last),
        ).fetchall()
    return [dict(r) for r in reversed(rows)]


def latest(db: Path) -> dict[str, dict]:
    """Per Kommune: its most recent run id and that run's counts."""
    if not db.exists():
        return {}
    with connect(db) as con:
        rows = con.execute(
            "SELECT rk.*, r.started FROM run_kommunen rk JOIN runs r ON r.id = rk.run_id "
            "WHERE r.partial = 0 ORDER BY r.started, rk.run_id"
        ).fetchall()
    out: dict[str, dict] = {}
    for r in rows:
        out[r["kommune"]] = dict(r)
    return out


def record_retired(db: Path, kommune: str, retired: str, backend: str, keep_until: str, detail: str) -> None:
    """Record that `kommune` left the estate (`basisit retire`); a second retire replaces the row."""
    with connect(db) as con:
        con.execute(
            "INSERT OR REPLACE INTO retired (kommune, retired, backend, keep_until, detail) VALUES (?, ?, ?, ?, ?)",
            (kommune, retired, backend, keep_until, detail),
        )


def retired(db: Path) -> dict[str, dict]:
    """The retired Kommunen, slug -> {retired, backend, keep_until, detail}."""
    if not db.exists():
        return {}
    with connect(db) as con:
        rows = con.execute("SELECT * FROM retired ORDER BY kommune").fetchall()
    return {r["kommune"]: dict(r) for r in rows}


def results_of(db: Path, run_id: str, kommune: str) -> list[dict]:
    with connect(db) as con:
        rows = con.execute(
            "SELECT * FROM results WHERE run_id = ? AND kommune = ? ORDER BY host, test_id, nodeid", (run_id, kommune)
        ).fetchall()
    return [
        dict(r)
        | {
            "controls": r["controls"].split(),
            "reproduce": json.loads(r["reproduce"]),
            "waiver": json.loads(r["waiver"]) if r["waiver"] else None,
        }
        for r in rows
    ]


def runs(db: Path, include_partial: bool = False) -> list[dict]:
    if not db.exists():
        return []
    where = "" if include_partial else " WHERE partial = 0"
    with connect(db) as con:
        return [dict(r) for r in con.execute(f"SELECT * FROM runs{where} ORDER BY started").fetchall()]


# --- drift (basisit drift) -------------------------------------------------------------------


def append_drift(db: Path, run: dict, sites: list[dict]) -> None:
    """Record one drift run (run: id, started, finished, selection, exit_status, report_dir,
    duration; sites: per site its changes, failed and unreachable items, as basisit.drift.cli makes them)."""
    with connect(db) as con:
        con.execute(
            "INSERT INTO drift_runs (id, started, finished, selection, changes, hosts, exit_status, report_dir, seconds, "
            "source) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                run["id"],
                run["started"],
                run["finished"],
                json.dumps(run["selection"]),
                sum(len(s["changes"]) for s in sites),
                sum(len(s["hosts_drifted"]) for s in sites),
                run["exit_status"],
                run["report_dir"],
                run["duration"],
                run.get("source", "hosts"),
            ),
        )
        for s in sites:
            con.execute(
                "INSERT INTO drift_kommunen (run_id, kommune, changes, hosts, failed, unreachable, error, seconds, "
                "source) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    run["id"],
                    s["kommune"],
                    len(s["changes"]),
                    len(s["hosts_drifted"]),
                    len(s["failed"]),
                    len({u["host"] for u in s["unreachable"]}),
                    s["error"],
                    s["seconds"],
                    run.get("source", "hosts"),
                ),
            )
            con.executemany(
                "INSERT INTO drift_changes (run_id, kommune, kind, host, task, role, action, resource, item, no_log, "
                "diff, message) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run["id"],
                        s["kommune"],
                        kind,
                        it["host"],
                        it["task"],
                        it.get("role", ""),
                        it.get("action", ""),
                        it.get("resource", ""),
                        it.get("item", ""),
                        int(bool(it.get("no_log"))),
                        it.get("diff", ""),
                        it.get("message", ""),
                    )
                    for kind, key in (("change", "changes"), ("failed", "failed"), ("unreachable", "unreachable"))
                    for it in s[key]
                ],
            )


def latest_drift(db: Path, source: str = "hosts") -> dict[str, dict]:
    """Per site: its most recent drift run's counts and items (changes, failed, unreachable), of
    the hosts (`hosts`) or of the cloud tenant (`cloud`)."""
    if not db.exists():
        return {}
    with connect(db) as con:
        rows = con.execute(
            "SELECT dk.*, dr.started FROM drift_kommunen dk JOIN drift_runs dr ON dr.id = dk.run_id "
            "WHERE dk.source = ? ORDER BY dr.started, dk.run_id",
            (source,),
        ).fetchall()
        out: dict[str, dict] = {r["kommune"]: dict(r) for r in rows}
        for k, row in out.items():
            items = con.execute(
                "SELECT kind, host, task, role, action, resource, item, no_log, diff, message FROM drift_changes "
                "WHERE run_id = ? AND kommune = ? ORDER BY rowid",
                (row["run_id"], k),
            ).fetchall()
            row["items"] = [dict(i) | {"no_log": bool(i["no_log"])} for i in items]
    return out
