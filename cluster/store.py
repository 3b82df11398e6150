"""The durable job store: one SQLite file holding every job and its state.

Every change is one transaction, so a crash leaves each job either before or after a change, never
half-way; a submission that repeats a client token returns the job already stored. The controller
is the only writer; readers (CLI, tests) may open the same file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    client_token TEXT UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued','running','paused','succeeded','failed','cancelled')),
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    outputs TEXT,
    steps_done INTEGER NOT NULL DEFAULT 0,
    checkpoint_step INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, submitted_at);
"""


@dataclass(frozen=True)
class JobRecord:
    id: str
    """Job id, also the name of its output folder."""
    client_token: str | None
    """Idempotency token given by the client, if any."""
    spec: dict
    """The validated job spec as plain data."""
    state: str
    """One of STATES."""
    priority: int
    """Higher runs first."""
    attempts: int
    """Times the job was started (a restart after a failure counts again)."""
    submitted_at: float
    """Unix time of submission."""
    started_at: float | None
    """Unix time the last attempt started."""
    finished_at: float | None
    """Unix time it reached a final state."""
    error: str | None
    """Why it failed."""
    outputs: dict | None
    """Output paths and metadata, once succeeded."""
    steps_done: int
    """Denoising steps completed (progress)."""
    checkpoint_step: int | None
    """Step of the last checkpoint written to the job directory."""
    cancel_requested: bool
    """A cancel was asked for while it ran; the coordinator stops at the next step."""
    failures: int = 0
    """Attempts that ended in a worker failure (pauses and segment ends are not failures)."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        data["spec"] = json.loads(data["spec"])
        data["outputs"] = json.loads(data["outputs"]) if data["outputs"] else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        return cls(**data)


class JobStoreError(RuntimeError):
    """An operation that the job's state does not allow."""


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers do not block the controller's writes
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "failures" not in columns:  # a store written before failures were counted
                db.execute("ALTER TABLE jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
        finally:
            db.close()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, kept open: closing the last connection to a WAL database
        checkpoints it (an fsync), which would make every small write cost milliseconds."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction. `durable=False` skips the fsync at commit (WAL, synchronous=NORMAL): the
        change survives a crash of the process but may roll back on power loss; the file stays
        consistent either way. Used for per-step progress, which the next step rewrites anyway."""
        db = self._connection()
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def submit(
        self, spec: dict[str, Any], priority: int = 0, client_token: str | None = None
    ) -> tuple[JobRecord, bool]:
        """Store a new queued job; returns (job, created). A known client token returns the stored job."""
        with self._transaction() as db:
            if client_token is not None:
                row = db.execute("SELECT * FROM jobs WHERE client_token = ?", (client_token,)).fetchone()
                if row is not None:
                    return JobRecord.from_row(row), False
            job_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:8]
            db.execute(
                "INSERT INTO jobs (id, client_token, spec, state, priority, submitted_at) VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, client_token, json.dumps(spec), int(priority), time.time()),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return JobRecord.from_row(row), True

    def get(self, job_id: str) -> JobRecord:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"job_id: no job {job_id!r}")
        return JobRecord.from_row(row)

    def list(self, state: str | None = None) -> list[JobRecord]:
        if state is not None and state not in STATES:
            raise ValueError(f"state: unknown state {state!r}; expected one of {STATES}")
        query = "SELECT * FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY submitted_at"
        with self._transaction() as db:
            rows = db.execute(query, (state,) if state else ()).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def next_runnable(self) -> JobRecord | None:
        """The job that runs next (queued or paused; priority, then submit time), left where it is."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state IN ('queued', 'paused') ORDER BY priority DESC, submitted_at, id LIMIT 1"
            ).fetchone()
        return JobRecord.from_row(row) if row is not None else None

    def claim(self, job_id: str) -> JobRecord | None:
        """Move a queued or paused job to running; None if it is no longer runnable (cancelled since)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE id = ? AND state IN ('queued', 'paused')",
                (time.time(), job_id),
            ).rowcount
            if not changed:
                return None
            return JobRecord.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def claim_next(self) -> JobRecord | None:
        """Move the next runnable job (queued or paused; priority, then submit time) to running."""
        job = self.next_runnable()
        return self.claim(job.id) if job is not None else None

    def progress(self, job_id: str, steps_done: int, checkpoint_step: int | None = None) -> None:
        with self._transaction(durable=checkpoint_step is not None) as db:
            if checkpoint_step is None:
                db.execute("UPDATE jobs SET steps_done = ? WHERE id = ?", (steps_done, job_id))
            else:
                db.execute(
                    "UPDATE jobs SET steps_done = ?, checkpoint_step = ? WHERE id = ?",
                    (steps_done, checkpoint_step, job_id),
                )

    def finish(
        self,
        job_id: str,
        state: str,
        outputs: dict | None = None,
        error: str | None = None,
        failed_attempt: bool = False,
    ) -> JobRecord:
        """Move a running job to a final state, or back to queued/paused to be resumed later.

        `failed_attempt`: this attempt ended in a failure (counted against the retry limit)."""
        if state not in STATES or state == "running":
            raise ValueError(f"state: cannot finish a job as {state!r}")
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(f"job_id: no job {job_id!r}")
            if row["state"] in FINAL_STATES:
                raise JobStoreError(f"job {job_id} is already {row['state']}")
            finished = time.time() if state in FINAL_STATES else None
            db.execute(
                "UPDATE jobs SET state = ?, outputs = ?, error = ?, finished_at = ?, cancel_requested = 0, "
                "failures = failures + ? WHERE id = ?",
                (
                    state,
                    json.dumps(outputs) if outputs is not None else None,
                    error,
                    finished,
                    int(failed_attempt),
                    job_id,
                ),
            )
            return JobRecord.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or paused job at once; flag a running one for its coordinator to stop."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(f"job_id: no job {job_id!r}")
            if row["state"] in ("queued", "paused"):
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ?", (time.time(), job_id)
                )
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return JobRecord.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def recover(self) -> list[str]:
        """After a controller restart: jobs left running go back to the queue (they resume from their
        checkpoint); returns their ids."""
        with self._transaction() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
            db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
        return ids
