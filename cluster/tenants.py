"""Tenants and their bearer tokens, kept in the job store's SQLite file (jobs.sqlite).

A token is ``tsr_<id>_<secret>``: the id finds its row, and only the SHA-256 of the whole token is stored,
compared in constant time (``hmac.compare_digest``), so neither a stolen store nor response timings give a
token away. Each token belongs to a tenant; a tenant has a priority ceiling and a limit on its jobs waiting to
run (None: no limit). While no token was ever created the HTTP API may stay open on a local bind (one default
tenant); once one exists it never opens again, even when every token is revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.errors import SpecError
from cluster.store import DEFAULT_TENANT

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tenants (
        name TEXT PRIMARY KEY,
        max_priority INTEGER,
        max_queued INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants (name),
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
)
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A tenant's name: it prefixes its jobs' idempotency keys and shows in listings."""


@dataclass(frozen=True)
class Tenant:
    name: str
    """The tenant's name; jobs record it."""
    max_priority: int | None = None
    """The highest priority its jobs may ask for; None: no ceiling."""
    max_queued: int | None = None
    """How many of its jobs may wait to run (queued or paused) at once; None: no limit."""

    def to_dict(self) -> dict:
        return asdict(self)


OPEN_TENANT = Tenant(DEFAULT_TENANT)
"""Who an open API (a local bind, no token ever created) serves: the CLI's and Python client's tenant."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tenants and tokens tables of one jobs.sqlite (created on first use, beside the jobs table)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            for statement in SCHEMA:
                db.execute(statement)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One transaction on a connection of its own, closed after it (token verbs are rare)."""
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def create(self, tenant: str, max_priority: int | None = None, max_queued: int | None = None) -> tuple[str, str]:
        """A new token for ``tenant`` (created, or its limits updated when given); returns (token id, token).
        The token itself is shown only here."""
        if not isinstance(tenant, str) or not TENANT_NAME.match(tenant):
            raise SpecError("tenant", f"expected 1-64 letters, digits, '_', '.' or '-', got {tenant!r}")
        if max_queued is not None and max_queued < 0:
            raise SpecError("max_queued", f"must be >= 0, got {max_queued}")
        token_id = secrets.token_hex(6)
        token = f"tsr_{token_id}_{secrets.token_urlsafe(32)}"
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
            if max_priority is not None:
                db.execute("UPDATE tenants SET max_priority = ? WHERE name = ?", (max_priority, tenant))
            if max_queued is not None:
                db.execute("UPDATE tenants SET max_queued = ? WHERE name = ?", (max_queued, tenant))
            db.execute(
                "INSERT INTO tokens (id, tenant, sha256, created_at) VALUES (?, ?, ?, ?)",
                (token_id, tenant, _digest(token), time.time()),
            )
        return token_id, token

    def list(self) -> list[dict]:
        """Every token (never the token itself) with its tenant's limits."""
        with self._db() as db:
            rows = db.execute(
                "SELECT t.id, t.tenant, t.created_at, t.revoked_at, n.max_priority, n.max_queued "
                "FROM tokens t JOIN tenants n ON n.name = t.tenant ORDER BY t.created_at"
            ).fetchall()
        return [dict(row) for row in rows]

    def revoke(self, token_id: str) -> None:
        with self._db() as db:
            changed = db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), token_id)
            ).rowcount
        if not changed:
            raise KeyError(f"token: no live token {token_id!r}")

    def any(self) -> bool:
        """A token was ever created (revoked ones count: revoking every token does not open the API)."""
        with self._db() as db:
            return db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None

    def authenticate(self, token: str | None, open_allowed: bool) -> Tenant | None:
        """The tenant a bearer token belongs to; None for an unknown, malformed or revoked one, or none. While
        the API is open (`open_allowed`: a loopback bind; and no token was ever created), the open tenant."""
        if open_allowed and not self.any():  # open: any bearer (an OpenAI client always sends one) is welcome
            return OPEN_TENANT
        if token is None:
            return None
        parts = token.split("_")
        if len(parts) < 3 or parts[0] != "tsr":
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT t.sha256, t.revoked_at, n.name, n.max_priority, n.max_queued "
                "FROM tokens t JOIN tenants n ON n.name = t.tenant WHERE t.id = ?",
                (parts[1],),
            ).fetchone()
        expected = row["sha256"] if row is not None else _digest("")  # compare anyway: same work either way
        matches = hmac.compare_digest(expected, _digest(token))
        if row is None or not matches or row["revoked_at"] is not None:
            return None
        return Tenant(row["name"], row["max_priority"], row["max_queued"])
