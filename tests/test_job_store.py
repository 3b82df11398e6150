"""The SQLite job store: ordering, idempotent submission, cancellation, recovery, atomicity."""

import sqlite3
import threading

import pytest

from cluster.errors import SpecError
from cluster.store import JobStore, JobStoreError


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "state" / "jobs.sqlite")


def test_submit_and_reopen(store, tmp_path):
    job, created = store.submit({"steps": 3}, priority=2)
    assert created and job.state == "queued" and job.spec == {"steps": 3} and job.attempts == 0
    again = JobStore(tmp_path / "state" / "jobs.sqlite").get(job.id)  # a new connection sees it: durable
    assert again == job


def test_client_token_makes_submission_idempotent(store):
    first, created = store.submit({"steps": 3}, client_token="tok-1")
    second, created_again = store.submit({"steps": 3}, client_token="tok-1")
    assert created and not created_again and second.id == first.id and second.spec == {"steps": 3}
    with pytest.raises(SpecError, match="client_token: already used for job"):
        store.submit({"steps": 99}, client_token="tok-1")  # another spec under the same token
    assert len(store.list()) == 1


def test_claim_order_is_priority_then_submit_time(store):
    low, _ = store.submit({"n": "low"}, priority=0)
    high, _ = store.submit({"n": "high"}, priority=5)
    low2, _ = store.submit({"n": "low2"}, priority=0)
    order = [store.claim_next().id for _ in range(3)]
    assert order == [high.id, low.id, low2.id]
    assert store.claim_next() is None
    assert all(j.state == "running" and j.attempts == 1 for j in store.list())


def test_cancel_queued_and_running(store):
    queued, _ = store.submit({})
    running, _ = store.submit({})
    assert store.claim_next().id == queued.id
    # `queued` is now running; `running` is still queued: cancel both
    flagged = store.cancel(queued.id)
    assert flagged.state == "running" and flagged.cancel_requested
    assert store.cancel(running.id).state == "cancelled"
    done = store.finish(queued.id, "cancelled")
    assert done.state == "cancelled" and done.finished_at is not None
    with pytest.raises(JobStoreError, match="already cancelled"):
        store.finish(queued.id, "succeeded")


def test_pause_then_resume_is_claimable_again(store):
    job, _ = store.submit({})
    store.claim_next()
    store.progress(job.id, 4, checkpoint_step=4)
    paused = store.finish(job.id, "paused")
    assert paused.state == "paused" and paused.finished_at is None and paused.checkpoint_step == 4
    resumed = store.claim_next()
    assert resumed.id == job.id and resumed.attempts == 2 and resumed.steps_done == 4


def test_recover_requeues_running_jobs(store):
    a, _ = store.submit({})
    b, _ = store.submit({})
    store.claim_next()
    assert store.recover() == [a.id]
    assert store.get(a.id).state == "queued" and store.get(b.id).state == "queued"


def test_unknown_job_and_state(store):
    with pytest.raises(KeyError, match="job_id"):
        store.get("nope")
    with pytest.raises(ValueError, match="state"):
        store.list("exploded")


def test_failed_transaction_changes_nothing(store):
    job, _ = store.submit({"x": 1})
    with pytest.raises(sqlite3.IntegrityError):
        with store._transaction() as db:
            db.execute("UPDATE jobs SET priority = 9 WHERE id = ?", (job.id,))
            db.execute("UPDATE jobs SET state = 'bogus' WHERE id = ?", (job.id,))  # violates the CHECK
    assert store.get(job.id).priority == 0


def test_concurrent_submissions_lose_and_duplicate_nothing(store):
    def submit_many(thread):
        for i in range(25):
            store.submit({"i": i}, client_token=f"{thread}-{i}")
            store.submit({"i": i}, client_token=f"{thread}-{i}")  # a retry

    threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = store.list()
    assert len(jobs) == 100 and len({j.client_token for j in jobs}) == 100
