"""Jobs on disjoint worker groups run at once; a degree=auto job paused for a higher-priority one
resumes on what is free, with another degree, and still equals an uninterrupted run (sync mode)."""

import time

import numpy as np
import pytest
import ray
from _job_outputs import job_image, job_metadata

from cluster.client import Client
from runtime.pool import PoolConfig


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"), checkpoint_every=2)
    client.outputs = root / "outputs"
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _spec(client, **extra):
    spec = {"height": 128, "width": 128, "steps": 12, "seed": 5, "output_dir": str(client.outputs)}
    spec.update(extra)
    return spec


def test_two_single_worker_jobs_run_at_once_on_different_workers(client):
    first = client.submit(_spec(client, seed=1))
    second = client.submit(_spec(client, seed=2))
    a, b = first.wait(timeout_s=180), second.wait(timeout_s=180)
    assert a["state"] == b["state"] == "succeeded"
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]  # they overlapped
    workers = [job_metadata(r)["segments"][0]["workers"] for r in (a, b)]
    assert sorted(workers) == [[0], [1]]


def test_auto_degree_job_resumes_with_the_degree_that_is_free(client):
    auto = {"strategy": "patch", "degree": "auto", "mode": "sync"}
    tall = _spec(client, height=512, width=256, steps=16, parallel=auto)
    reference = client.submit(tall).wait(timeout_s=300)
    assert [s["degree"] for s in job_metadata(reference)["segments"]] == [2]  # 512x256 px: 2 bands of 256 rows

    job = client.submit(tall)
    deadline = time.monotonic() + 120
    while job.status()["steps_done"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    urgent = client.submit(_spec(client, steps=12, seed=9), priority=10)
    assert urgent.wait(timeout_s=300)["state"] == "succeeded"
    final = job.wait(timeout_s=300)
    assert final["state"] == "succeeded", job.logs()
    segments = job_metadata(final)["segments"]
    assert segments[0]["degree"] == 2 and segments[0]["steps"][1] < 16
    assert 1 in [s["degree"] for s in segments[1:]], segments  # resumed beside the urgent job
    assert "pausing for" in job.logs()
    # sync patches equal one device up to float rounding; the PNGs agree to one level
    assert np.abs(job_image(final) - job_image(reference)).max() <= 1
