"""The job service end to end: a real controller actor, real SQLite, real Ray workers."""

import time

import pytest
import ray
from PIL import Image
from test_spec_validation import BAD_SPECS

from cluster.client import Client, JobFailed
from cluster.errors import SpecError
from runtime.pool import PoolConfig


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"))
    client.outputs = root / "outputs"
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def small(client, steps=2, **extra):
    spec = {"height": 64, "width": 64, "steps": steps, "seed": 1, "parallel": {"strategy": "none"}}
    spec["output_dir"] = str(client.outputs)
    spec.update(extra)
    return spec


def test_connecting_without_a_controller_says_how_to_start_one(ray_local):
    with pytest.raises(ConnectionError, match="tessera serve"):
        Client(connect_only=True)


def test_submit_wait_result(client):
    job = client.submit(small(client))
    record = job.wait(timeout_s=120)
    assert record["state"] == "succeeded" and record["steps_done"] == 2 and record["attempts"] == 1
    outputs = job.result()
    with Image.open(outputs["image"]) as png:
        assert png.size == (64, 64)
    assert "succeeded" in job.logs()


def test_patch_job_through_the_service(client):
    job = client.submit(
        small(client, height=128, parallel={"strategy": "patch", "degree": 2, "mode": "sync"})
    )
    assert job.wait(timeout_s=120)["state"] == "succeeded"


def both_workers(client, steps):
    """A job that holds the whole 2-worker pool, so the jobs after it queue."""
    return small(client, steps=steps, height=128, parallel={"strategy": "patch", "degree": 2})


def test_priority_then_submit_time(client):
    blocker = client.submit(both_workers(client, steps=30))
    low = client.submit(small(client), priority=0)
    high = client.submit(small(client), priority=10)
    for job in (blocker, low, high):
        job.wait(timeout_s=180)
    assert high.status()["started_at"] < low.status()["started_at"]


def test_cancel_queued_and_running(client):
    running = client.submit(both_workers(client, steps=200))
    queued = client.submit(small(client))
    deadline = time.monotonic() + 60
    while running.status()["steps_done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queued.cancel()["state"] == "cancelled"
    running.cancel()
    final = running.wait(timeout_s=120)
    assert final["state"] == "cancelled" and final["steps_done"] < 200
    with pytest.raises(JobFailed, match="cancelled"):
        running.result()


def test_bad_spec_is_refused_and_nothing_is_stored(client):
    before = len(client.jobs())
    with pytest.raises(SpecError) as caught:
        client.submit(small(client, steps=0))
    assert caught.value.field == "steps"
    with pytest.raises(SpecError, match="parallel.degree"):
        client.submit(small(client, parallel={"strategy": "patch", "degree": 3}))  # the pool has 2
    with pytest.raises(SpecError, match="priority"):
        client.submit(small(client), priority="high")
    assert len(client.jobs()) == before


def test_every_bad_spec_kind_is_refused_through_submit_and_stores_nothing(client):
    before = client.jobs()
    assert len(BAD_SPECS) >= 20
    for change, field in BAD_SPECS:
        with pytest.raises(SpecError) as caught:
            client.submit({**small(client), **change})
        assert caught.value.field == field, (change, str(caught.value))
    assert client.jobs() == before


def test_resubmission_with_the_same_token_returns_the_same_job(client):
    first = client.submit(small(client), client_token="render-42")
    again = client.submit(small(client), client_token="render-42")  # a retry: the same spec
    assert again.id == first.id
    with pytest.raises(SpecError) as caught:  # the token of another job: refused, not silently the old job
        client.submit(small(client, seed=9), client_token="render-42")
    assert caught.value.field == "client_token" and first.id in caught.value.message
    assert sum(1 for j in client.jobs() if j["client_token"] == "render-42") == 1
    first.wait(timeout_s=120)
