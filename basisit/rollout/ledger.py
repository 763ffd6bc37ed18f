"""The rollout ledger: every step of every rollout, in SQLite in the state directory."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    backend TEXT NOT NULL,
    standard_version INTEGER NOT NULL,
    selection TEXT NOT NULL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    site TEXT NOT NULL,
    step TEXT NOT NULL,
    standard_version INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    seconds REAL,
    result TEXT,            -- ok | failed | unreachable | skipped
    detail TEXT,
    log TEXT,
    inputs TEXT             -- a converge's inputs digest (zentral), else ''
);
CREATE INDEX IF NOT EXISTS steps_site ON steps(site, step, standard_version);
"""
STEP_COLUMNS = "run_id, site, step, standard_version, started, finished, seconds, result, detail, log, inputs"


def path_in(state: Path) -> Path:
    """Where a state directory keeps its ledger."""
    return Path(state) / "ledger.sqlite"


def converged_versions(path: Path) -> dict[str, int]:
    """Per site, the standard version of its most recent passed converge (any backend); {} when
    there is no ledger. Read-only: a reader (the dashboard) never creates or changes a ledger."""
    if not Path(path).is_file():
        return {}
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT site, standard_version FROM steps WHERE step = 'converge' AND result = 'ok' ORDER BY rowid"
        ).fetchall()
    except sqlite3.DatabaseError:  # not a ledger, or one from before the steps table
        return {}
    finally:
        db.close()
    return {site: int(version) for site, version in rows}  # the last row per site wins


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Ledger:
    """Every step of every rollout; safe to use from several threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(steps)")}
        if "inputs" not in columns:  # a ledger written before the inputs digest
            self._db.execute("ALTER TABLE steps ADD COLUMN inputs TEXT")

    def close(self) -> None:
        self._db.close()

    def start_run(self, backend: str, version: int, selection: list[str]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (started, backend, standard_version, selection) VALUES (?, ?, ?, ?)",
                (now(), backend, version, " ".join(selection)),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, result: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET finished = ?, result = ? WHERE id = ?", (now(), result, run_id))

    def record(
        self,
        run_id: int,
        site: str,
        step: str,
        version: int,
        started: str,
        seconds: float,
        result: str,
        detail: str = "",
        log: str = "",
        inputs: str = "",
    ) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, site, step, version, started, now(), round(seconds, 2), result, detail, log, inputs),
            )

    def _last(self, site: str, step: str, version: int, backend: str) -> tuple[str, str] | None:
        """(result, inputs) of the site's most recent run of `step` at this standard version and
        backend that was not skipped; None when there is none."""
        with self._lock:
            return self._db.execute(
                "SELECT s.result, s.inputs FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE s.site = ? AND s.step = ? AND s.standard_version = ? AND r.backend = ? "
                "AND s.result != 'skipped' ORDER BY s.rowid DESC LIMIT 1",
                (site, step, version, backend),
            ).fetchone()

    def verified(self, site: str, version: int, backend: str) -> bool:
        """True when the site's most recent verify at this standard version (and backend) passed."""
        row = self._last(site, "verify", version, backend)
        return bool(row and row[0] == "ok")

    def converged(self, site: str, version: int, backend: str, inputs: str) -> bool:
        """True when the site's most recent converge at this standard version (and backend)
        passed with these inputs (an empty digest never matches)."""
        row = self._last(site, "converge", version, backend)
        return bool(inputs and row and row[0] == "ok" and row[1] == inputs)

    def steps(self, run_id: int) -> list[tuple]:
        with self._lock:
            return self._db.execute(
                "SELECT site, step, result, seconds, detail FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
