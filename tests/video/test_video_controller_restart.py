"""A video job survives a killed controller: a new controller on the same state dir resumes it from its
checkpoint, finishes it once, and its video equals the uninterrupted one (real Ray, real SQLite).

One worker per pool: most of this test's time is starting processes (Ray, each controller's pool), and
one worker also keeps the second job queued behind the first. Multi-stage resumes are covered by
test_video_jobs.py."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import ray
from _video_jobs import TICKS, decoded_frames, video_spec, wait_for_tick

from cluster.client import Client
from cluster.controller import CONTROLLER_NAME, NAMESPACE
from runtime.pool import PoolConfig

pytestmark = pytest.mark.slow  # about 45 s on 2 shared cores: Ray and two controllers' workers start


def _client(state_dir) -> Client:
    return Client(
        state_dir=state_dir, pool=PoolConfig(workers=1, device="cpu", group_timeout_s=30), checkpoint_every=2
    )


def _stop(client: Client) -> None:
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _wait_until_the_name_is_free(timeout_s: float = 30) -> None:
    """A killed actor's name is released a moment later; a new controller must not get the dead one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the killed controller's name {CONTROLLER_NAME!r} was not released")


def test_killed_controller_resumes_a_video_job_once(ray_local, tmp_path):
    state = tmp_path / "state"
    client = _client(state)
    reference = client.submit(video_spec(tmp_path / "reference")).wait(timeout_s=300)  # uninterrupted
    assert reference["state"] == "succeeded"
    running = client.submit(video_spec(tmp_path / "out"))
    queued = client.submit(video_spec(tmp_path / "out", frames=2, steps=2, seed=9))  # waits for the worker
    before = wait_for_tick(running, 4, checkpoint=True)  # blocks 0 and 1 are finished
    waiting = queued.status()
    ray.kill(client.controller, no_restart=True)  # the controller dies; its pool's workers die with it
    assert before["state"] == "running" and before["steps_done"] < TICKS and waiting["state"] == "queued"
    _wait_until_the_name_is_free()
    revived = _client(state)  # a new controller on the same store
    try:
        final = revived.job(running.id).wait(timeout_s=300)
        second = revived.job(queued.id).wait(timeout_s=300)
        jobs, logs = revived.jobs(), revived.job(running.id).logs()
    finally:
        _stop(revived)
    assert final["state"] == "succeeded" and second["state"] == "succeeded", logs
    assert second["attempts"] == 1, second
    assert sorted(job["id"] for job in jobs) == sorted([reference["id"], running.id, queued.id])  # none lost
    assert final["attempts"] == 2 and logs.count("succeeded in") == 1, logs  # completed once
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([running.id, queued.id])
    resumed = re.search(r"attempt 2 .*from tick (\d+) \((\d+) blocks kept\)", logs)
    assert resumed, logs  # from its checkpoint, not from the start
    tick, kept = map(int, resumed.groups())
    assert tick >= before["checkpoint_step"] >= 4 and kept >= 1, logs  # segments survived the restart
    np.testing.assert_array_equal(decoded_frames(final), decoded_frames(reference))
