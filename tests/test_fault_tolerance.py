"""Jobs survive pauses, killed worker processes and a killed controller (real Ray, SQLite, processes)."""

import json
import os
import signal
import time

import numpy as np
import pytest
import ray
from PIL import Image

from cluster.client import Client
from runtime.pool import PoolConfig

pytestmark = pytest.mark.slow


def _spec(outputs, steps=14, seed=3):
    """14 steps: stopped or killed at step 4 or 7, each job has steps to redo after its checkpoint at 3 or 6."""
    return {
        "height": 256,
        "width": 128,
        "steps": steps,
        "seed": seed,
        "output_dir": str(outputs),
        "parallel": {"strategy": "patch", "degree": 2, "mode": "sync"},
    }


def _client(state_dir):
    return Client(
        state_dir=state_dir, pool=PoolConfig(workers=2, device="cpu", group_timeout_s=30), checkpoint_every=3
    )


def _image(record) -> np.ndarray:
    with Image.open(record["outputs"]["image"]) as png:
        return np.asarray(png.convert("RGB"))


def _wait_for_step(job, step, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = job.status()
        if record["steps_done"] >= step or record["state"] in ("succeeded", "failed"):
            return record
        time.sleep(0.05)
    raise TimeoutError(f"job {job.id} did not reach step {step}")


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    """The uninterrupted render every interrupted one must equal (sync mode is exact)."""
    root = tmp_path_factory.mktemp("reference")
    client = _client(root / "state")
    record = client.submit(_spec(root / "out")).wait(timeout_s=300)
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)
    assert record["state"] == "succeeded"
    return _image(record)


def test_pause_for_higher_priority_then_resume_equals_uninterrupted(reference, tmp_path):
    client = _client(tmp_path / "state")
    try:
        long = client.submit(_spec(tmp_path / "out"))
        _wait_for_step(long, 4)
        urgent = client.submit({**_spec(tmp_path / "out", steps=2), "height": 64}, priority=10)
        urgent_done = urgent.wait(timeout_s=300)
        final = long.wait(timeout_s=300)
        logs = long.logs()
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
    assert urgent_done["state"] == "succeeded" and final["state"] == "succeeded"
    assert "paused" in logs and final["attempts"] == 2, logs
    assert urgent_done["finished_at"] < final["finished_at"]
    np.testing.assert_array_equal(_image(final), reference)


def _worker_pids(client):
    return [info["pid"] for info in ray.get(client.controller.info.remote())["pool"]]


def test_killed_worker_process_resumes_from_checkpoint(reference, tmp_path):
    client = _client(tmp_path / "state")
    try:
        job = client.submit(_spec(tmp_path / "out"))
        record = _wait_for_step(job, 7)
        assert record["checkpoint_step"] is not None and record["checkpoint_step"] >= 3
        victims = _worker_pids(client)
        assert len(victims) == 2
        os.kill(victims[1], signal.SIGKILL)
        final = job.wait(timeout_s=300)
        logs = job.logs()
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
    assert final["state"] == "succeeded", logs
    assert final["attempts"] == 2 and "worker died" in logs, logs
    np.testing.assert_array_equal(_image(final), reference)
    # the killed attempt's steps up to its checkpoint are in the image: the segment history says where they ran
    with open(final["outputs"]["metadata"]) as metadata:
        died, resumed = json.load(metadata)["segments"]
    assert died["ended"] == "failed" and died["steps"] == [0, resumed["steps"][0]] and resumed["steps"][1] == 14, logs
    assert resumed["steps"][0] >= 3 and "ended" not in resumed


def test_killed_controller_recovers_every_job_once(reference, tmp_path):
    state = tmp_path / "state"
    client = _client(state)
    running = client.submit(_spec(tmp_path / "out"))
    queued = client.submit(_spec(tmp_path / "out", steps=3, seed=8))
    _wait_for_step(running, 7)
    ray.kill(client.controller, no_restart=True)  # the controller dies; its pool's workers die with it
    time.sleep(2)
    revived = _client(state)  # a new controller on the same store
    try:
        first = revived.job(running.id).wait(timeout_s=300)
        second = revived.job(queued.id).wait(timeout_s=300)
        jobs = revived.jobs()
        logs = revived.job(running.id).logs()
    finally:
        ray.get(revived.controller.stop.remote())
        ray.kill(revived.controller)
    assert first["state"] == "succeeded" and second["state"] == "succeeded"
    assert sorted(j["id"] for j in jobs) == sorted([running.id, queued.id])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([running.id, queued.id])
    assert "from step" in logs.split("attempt 2", 1)[1].splitlines()[0]  # resumed from its checkpoint
    np.testing.assert_array_equal(_image(first), reference)
