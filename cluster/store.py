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

from cluster.errors import SpecError, TenantLimit
from cluster.job_states import FINAL_STATES, HOLDING_WORKERS, RUNNABLE, STATES, sources

DEFAULT_TENANT = "default"
"""The tenant of jobs submitted without one (the CLI, the Python client, the HTTP API while it is open)."""

TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    client_token TEXT UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({states})),
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
    failures INTEGER NOT NULL DEFAULT 0,
    tenant TEXT NOT NULL DEFAULT 'default'
)
""".replace("{states}", ",".join(f"'{state}'" for state in STATES))
INDEX = "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, submitted_at)"
COLUMNS = (
    "id, client_token, spec, state, priority, attempts, submitted_at, started_at, finished_at, error, "
    "outputs, steps_done, checkpoint_step, cancel_requested, failures, tenant"
)


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
    tenant: str = DEFAULT_TENANT
    """Who submitted it (``cluster.tenants``): the CLI's and the Python client's jobs are the default tenant's."""

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
            db.execute(TABLE)
            db.execute(INDEX)
            db.commit()
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "failures" not in columns:  # a store written before failures were counted
                db.execute("ALTER TABLE jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
                db.commit()
            if "tenant" not in columns:  # a store written before tenants: its jobs are the default tenant's
                db.execute(f"ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'")
                db.commit()
            table = db.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
            if "'pausing'" not in table:  # a store written before the placed and pausing states
                _widen_states(db)
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
        try:
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a COMMIT the disk refused (SQLITE_FULL) may leave the transaction open
                db.execute("ROLLBACK")
            raise

    def submit(
        self,
        spec: dict[str, Any],
        priority: int = 0,
        client_token: str | None = None,
        tenant: str = DEFAULT_TENANT,
        max_queued: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store a new queued job; returns (job, created). A known client token returns the stored job.
        `max_queued`: the tenant's limit on its jobs waiting to run (queued or paused), checked in the same
        transaction as the insert (TenantLimit when it is reached)."""
        with self._transaction() as db:
            if client_token is not None:
                row = db.execute("SELECT * FROM jobs WHERE client_token = ?", (client_token,)).fetchone()
                if row is not None:
                    if json.loads(row["spec"]) != json.loads(json.dumps(spec)):
                        raise SpecError(
                            "client_token",
                            f"already used for job {row['id']} with another spec; a retry must send the same spec",
                        )
                    return JobRecord.from_row(row), False
            if max_queued is not None:
                waiting = db.execute(
                    f"SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state IN {RUNNABLE}", (tenant,)
                ).fetchone()[0]
                if waiting >= max_queued:
                    raise TenantLimit(
                        "queued_jobs", f"tenant {tenant!r} already has {waiting} jobs waiting (its limit)", 429
                    )
            job_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:8]
            db.execute(
                "INSERT INTO jobs (id, client_token, spec, state, priority, submitted_at, tenant) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, client_token, json.dumps(spec), int(priority), time.time(), tenant),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return JobRecord.from_row(row), True

    def get(self, job_id: str) -> JobRecord:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"job_id: no job {job_id!r}")
        return JobRecord.from_row(row)

    def list(self, state: str | None = None, tenant: str | None = None) -> list[JobRecord]:
        """Jobs in submit order; `state`, `tenant`: only those in that state, of that tenant."""
        if state is not None and state not in STATES:
            raise ValueError(f"state: unknown state {state!r}; expected one of {STATES}")
        where = [(column, value) for column, value in (("state", state), ("tenant", tenant)) if value]
        query = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(f"{c} = ?" for c, _ in where) if where else "")
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY submitted_at", tuple(v for _, v in where)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def counts(self) -> tuple[dict[str, int], dict[int, int]]:
        """(jobs per state, waiting jobs (queued or paused) per priority): what the metrics report."""
        with self._transaction(durable=False) as db:
            by_state = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            waiting = db.execute(f"SELECT priority, COUNT(*) FROM jobs WHERE state IN {RUNNABLE} GROUP BY priority")
            return by_state, dict(waiting.fetchall())

    def next_runnable(self) -> JobRecord | None:
        """The job that runs next (queued or paused; priority, then submit time), left where it is."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE state IN {RUNNABLE} ORDER BY priority DESC, submitted_at, id LIMIT 1"
            ).fetchone()
        return JobRecord.from_row(row) if row is not None else None

    def _transition(self, db: sqlite3.Connection, job_id: str, target: str, sets: str = "", args=()) -> bool:
        """Move the job to ``target`` if the state machine allows it from its state (in the caller's
        transaction); False when it does not (the job moved on meanwhile, e.g. it was cancelled)."""
        allowed = sources(target)
        changed = db.execute(
            f"UPDATE jobs SET state = ?{sets} WHERE id = ? AND state IN ({','.join('?' * len(allowed))})",
            (target, *args, job_id, *allowed),
        ).rowcount
        return bool(changed)

    def _record(self, db: sqlite3.Connection, job_id: str) -> JobRecord:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"job_id: no job {job_id!r}")
        return JobRecord.from_row(row)

    def place(self, job_id: str) -> JobRecord | None:
        """A queued or paused job is given workers (an attempt begins); None if it is no longer runnable."""
        with self._transaction() as db:
            if not self._transition(db, job_id, "placed", ", attempts = attempts + 1, started_at = ?", (time.time(),)):
                return None
            return self._record(db, job_id)

    def start(self, job_id: str) -> JobRecord:
        """A placed job begins on its workers."""
        with self._transaction() as db:
            if not self._transition(db, job_id, "running"):
                raise JobStoreError(f"job {job_id} is {self._record(db, job_id).state}, not placed")
            return self._record(db, job_id)

    def pausing(self, job_id: str) -> bool:
        """A running job is asked to pause at its next step boundary; False if it is not running."""
        with self._transaction() as db:
            return self._transition(db, job_id, "pausing")

    def claim(self, job_id: str) -> JobRecord | None:
        """Place a queued or paused job and start it at once; None if it is no longer runnable."""
        return self.start(job_id) if self.place(job_id) is not None else None

    def claim_next(self) -> JobRecord | None:
        """Place and start the next runnable job (queued or paused; priority, then submit time)."""
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
        """End a job's attempt: in a final state, or back to queued/paused to be resumed later.

        `failed_attempt`: this attempt ended in a failure (counted against the retry limit)."""
        if state not in FINAL_STATES + RUNNABLE:
            raise ValueError(f"state: cannot finish a job as {state!r}")
        with self._transaction() as db:
            current = self._record(db, job_id).state
            if current in FINAL_STATES:
                raise JobStoreError(f"job {job_id} is already {current}")
            finished = time.time() if state in FINAL_STATES else None
            sets = ", outputs = ?, error = ?, finished_at = ?, cancel_requested = 0, failures = failures + ?"
            args = (json.dumps(outputs) if outputs is not None else None, error, finished, int(failed_attempt))
            if not self._transition(db, job_id, state, sets, args):
                raise JobStoreError(f"job {job_id} cannot go from {current} to {state}")
            return self._record(db, job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or paused job at once; flag one holding workers for its runner to stop."""
        with self._transaction() as db:
            state = self._record(db, job_id).state
            if state in RUNNABLE:
                self._transition(db, job_id, "cancelled", ", finished_at = ?", (time.time(),))
            elif state in HOLDING_WORKERS:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return self._record(db, job_id)

    def set_priority(self, job_id: str, priority: int) -> JobRecord | None:
        """Give a job that has not ended a new priority (the queue's order and preemption read it); None if it
        has ended."""
        with self._transaction() as db:
            self._record(db, job_id)  # KeyError for an unknown job
            finals = ",".join("?" * len(FINAL_STATES))
            changed = db.execute(
                f"UPDATE jobs SET priority = ? WHERE id = ? AND state NOT IN ({finals})",
                (int(priority), job_id, *FINAL_STATES),
            ).rowcount
            return self._record(db, job_id) if changed else None

    def recover(self) -> list[str]:
        """After a controller restart: jobs left holding workers go back to the queue (they resume from
        their checkpoint); returns their ids."""
        holding = f"state IN {HOLDING_WORKERS}"
        with self._transaction() as db:
            ids = [r["id"] for r in db.execute(f"SELECT id FROM jobs WHERE {holding}").fetchall()]
            db.execute(f"UPDATE jobs SET state = 'queued' WHERE {holding}")
        return ids


def _widen_states(db: sqlite3.Connection) -> None:
    """Rebuild the jobs table with today's state CHECK (SQLite cannot alter a constraint), keeping every row."""
    db.commit()
    db.isolation_level = None  # explicit transaction below
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DROP INDEX IF EXISTS jobs_queue")
        db.execute("ALTER TABLE jobs RENAME TO jobs_before_states")
        db.execute(TABLE)
        db.execute(INDEX)
        db.execute(f"INSERT INTO jobs ({COLUMNS}) SELECT {COLUMNS} FROM jobs_before_states")
        db.execute("DROP TABLE jobs_before_states")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
