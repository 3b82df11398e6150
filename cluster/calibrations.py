"""Cache calibrations kept in the job store's database: the setting a ``cache.min_psnr`` job's calibration chose,
by what it depends on, so later jobs of the same model, size, sampler and steps reuse it instead of rendering the
reference again (``parallel.cache.calibrate``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

TABLE = """
CREATE TABLE IF NOT EXISTS cache_calibrations (
    key TEXT PRIMARY KEY,
    calibration TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


class CalibrationStore:
    """One table beside the jobs (the same SQLite file); a connection per thread, as the job store has."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._db().execute(TABLE)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._local.db = db
        return db

    def get(self, key: str) -> dict | None:
        """The stored calibration for ``key`` (``Calibration.as_dict``), or None."""
        row = self._db().execute("SELECT calibration FROM cache_calibrations WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, calibration: dict, job_id: str) -> None:
        """Keep the first calibration of ``key``: jobs placed meanwhile may have calibrated too; any one holds."""
        self._db().execute(
            "INSERT OR IGNORE INTO cache_calibrations (key, calibration, job_id, created_at) VALUES (?, ?, ?, ?)",
            (key, json.dumps(calibration), job_id, time.time()),
        )

    def drop(self, key: str) -> None:
        """Forget the calibration of ``key`` (a shadow re-check found it below its budget): the next job calibrates."""
        self._db().execute("DELETE FROM cache_calibrations WHERE key = ?", (key,))
