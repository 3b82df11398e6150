"""The job state machine: the store refuses what the table does not allow, old stores are migrated, and a
validated spec places its job without reading the model directory again."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from cluster.failure_policy import Failure, RetryWorkerDeaths
from cluster.job_states import FINAL_STATES, STATES, TRANSITIONS, sources
from cluster.jobs.image import RenderSpec
from cluster.scheduler import simple_degree_rule, wanted_degree
from cluster.store import JobStore, JobStoreError


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs.sqlite")


def test_the_table_covers_every_state_and_final_states_have_no_exit():
    assert set(TRANSITIONS) | set(FINAL_STATES) == set(STATES)
    assert all(target in STATES for targets in TRANSITIONS.values() for target in targets)
    assert sources("placed") == ("queued", "paused") and sources("pausing") == ("running",)


def test_a_job_walks_placed_running_pausing_paused_and_back(store):
    job, _ = store.submit({"steps": 4})
    with pytest.raises(JobStoreError, match="not placed"):
        store.start(job.id)
    assert store.pausing(job.id) is False  # only a running job can be asked to pause
    assert store.place(job.id).state == "placed"
    assert store.place(job.id) is None  # placed once: not runnable any more
    assert store.start(job.id).state == "running"
    assert store.pausing(job.id) is True and store.get(job.id).state == "pausing"
    assert store.finish(job.id, "paused").state == "paused"
    assert store.place(job.id).attempts == 2


def test_cancel_of_a_placed_or_pausing_job_is_a_request(store):
    job, _ = store.submit({})
    store.place(job.id)
    flagged = store.cancel(job.id)
    assert flagged.state == "placed" and flagged.cancel_requested
    store.start(job.id)
    store.pausing(job.id)
    assert store.finish(job.id, "cancelled").state == "cancelled"
    with pytest.raises(JobStoreError, match="already cancelled"):
        store.finish(job.id, "queued")


def test_a_queued_job_cannot_finish_as_succeeded(store):
    job, _ = store.submit({})
    with pytest.raises(JobStoreError, match="cannot go from queued to succeeded"):
        store.finish(job.id, "succeeded")


def test_recover_requeues_every_state_that_held_workers(store):
    placed, _ = store.submit({})
    pausing, _ = store.submit({})
    store.place(placed.id)
    store.claim(pausing.id)
    store.pausing(pausing.id)
    assert sorted(store.recover()) == sorted([placed.id, pausing.id])
    assert {store.get(i).state for i in (placed.id, pausing.id)} == {"queued"}


def test_a_store_written_before_the_new_states_is_migrated_with_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE jobs (id TEXT PRIMARY KEY, client_token TEXT UNIQUE, spec TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued','running','paused','succeeded','failed','cancelled')),
        priority INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, submitted_at REAL NOT NULL,
        started_at REAL, finished_at REAL, error TEXT, outputs TEXT, steps_done INTEGER NOT NULL DEFAULT 0,
        checkpoint_step INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, spec, state, submitted_at, steps_done) VALUES ('old', '{"steps": 3}', 'running', 1.0, 2);"""
    )
    db.commit()
    db.close()
    store = JobStore(path)
    job = store.get("old")
    assert (job.state, job.spec, job.steps_done, job.failures) == ("running", {"steps": 3}, 2, 0)
    store.recover()
    store.place("old")
    store.start("old")
    assert store.pausing("old") and store.get("old").state == "pausing"  # the new states are allowed


def test_the_default_failure_policy_retries_worker_deaths_only(store):
    job, _ = store.submit({})
    policy = RetryWorkerDeaths(max_attempts=2)
    assert policy.decide(Failure(job, RuntimeError("x"), worker_died=True)) == "queued"
    assert policy.decide(Failure(job, RuntimeError("x"), worker_died=False)) == "failed"
    tired = type(job)(**{**job.__dict__, "failures": 1})
    assert policy.decide(Failure(tired, RuntimeError("x"), worker_died=True)) == "failed"


def test_placing_a_validated_job_reads_nothing_from_the_model_directory(tmp_path, builtin_image_dir):
    model = tmp_path / "model"
    shutil.copytree(builtin_image_dir, model)
    spec = RenderSpec.from_dict(
        {"model": str(model), "height": 1024, "width": 256, "parallel": {"strategy": "patch", "degree": "auto"}}
    )
    shutil.rmtree(model)  # what the scheduler asks now comes from what validation kept
    segment = spec.segment_from(0)
    assert spec.model_path(segment.model) == str(model)
    assert wanted_degree(spec, segment.model, 3, simple_degree_rule) == 3
    assert spec.placed(segment.model, 2).model == str(model)
