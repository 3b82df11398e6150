"""Tokens and tenants in a real jobs.sqlite (no Ray): stored hashed, refused once revoked, the API open only
on a loopback bind before any token exists; a non-loopback `tessera serve` without a token refused before
anything starts; a store written before tenants gains the column with its jobs the default tenant's."""

from __future__ import annotations

import sqlite3

import pytest

from cluster.errors import TenantLimit
from cluster.store import JobStore
from cluster.tenants import OPEN_TENANT, Tenant, TokenStore


def test_tokens_are_stored_hashed_and_a_revoked_one_is_refused(tmp_path):
    tokens = TokenStore(tmp_path / "jobs.sqlite")
    assert tokens.authenticate(None, open_allowed=True) == OPEN_TENANT  # no token yet, loopback: open
    assert tokens.authenticate("sk-anything", open_allowed=True) == OPEN_TENANT  # what an OpenAI client sends
    assert tokens.authenticate(None, open_allowed=False) is None  # never open beyond this machine
    token_id, token = tokens.create("studio-a", max_priority=5, max_queued=2)
    assert token.encode() not in (tmp_path / "jobs.sqlite").read_bytes()
    assert tokens.authenticate(token, open_allowed=True) == Tenant("studio-a", 5, 2)
    assert tokens.authenticate(None, open_allowed=True) is None  # a token exists: closed
    assert tokens.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"), open_allowed=True) is None
    tokens.revoke(token_id)
    assert tokens.authenticate(token, open_allowed=True) is None
    assert tokens.authenticate(None, open_allowed=True) is None  # revoking every token does not open it
    assert [row["revoked_at"] is not None for row in tokens.list()] == [True]
    with pytest.raises(KeyError):
        tokens.revoke(token_id)


def test_a_tenants_waiting_jobs_are_limited_in_the_submit_transaction(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    spec = {"prompt": "x", "steps": 2}
    for seed in range(2):
        store.submit({**spec, "seed": seed}, tenant="studio-a", max_queued=2)
    with pytest.raises(TenantLimit) as refused:
        store.submit({**spec, "seed": 3}, tenant="studio-a", max_queued=2)
    assert refused.value.field == "queued_jobs" and refused.value.status == 429
    store.submit({**spec, "seed": 3}, tenant="studio-b", max_queued=2)  # another tenant's count
    assert [job.tenant for job in store.list(tenant="studio-a")] == ["studio-a"] * 2


def test_a_store_from_before_tenants_reads_its_jobs_as_the_default_tenants(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, client_token TEXT UNIQUE, spec TEXT NOT NULL, state TEXT NOT NULL "
        "CHECK (state IN ('queued','placed','running','pausing','paused','succeeded','failed','cancelled')), "
        "priority INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, submitted_at REAL NOT NULL, "
        "started_at REAL, finished_at REAL, error TEXT, outputs TEXT, steps_done INTEGER NOT NULL DEFAULT 0, "
        "checkpoint_step INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO jobs (id, spec, state, submitted_at) VALUES ('old', '{}', 'queued', 1.0)")
    db.commit()
    db.close()
    assert JobStore(path).get("old").tenant == "default"


def test_serve_refuses_a_non_loopback_bind_without_a_token(tmp_path, capsys, ray_stopped):
    import ray

    from cluster.cli import main

    assert main(["serve", "http.host=0.0.0.0", "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: invalid setting: http.host: '0.0.0.0' is not a loopback address"), err
    assert not ray.is_initialized()  # refused before Ray started
