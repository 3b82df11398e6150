"""At a segment boundary a job goes back to the queue in the same step as its workers are freed, so a
lower-priority job queued behind it cannot take them in between (and be paused again at once for it)."""

import pytest
import ray

from cluster.client import Client
from runtime.pool import PoolConfig

STEPS, SWITCH = 6, 3


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("segment-priority")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=1, device="cpu"))
    client.outputs = root / "outputs"
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _spec(client, **extra) -> dict:
    spec = {"height": 64, "width": 64, "steps": STEPS, "seed": 2, "output_dir": str(client.outputs)}
    spec.update(extra)
    return spec


def test_a_lower_job_does_not_slip_in_between_a_higher_jobs_segments(client, builtin_image_dir):
    # the second segment runs a copy of the same model by another path: a model switch, placed anew
    urgent = client.submit(
        _spec(client, segments=[{"steps": SWITCH}, {"steps": STEPS - SWITCH, "model": str(builtin_image_dir)}]),
        priority=10,
    )
    low = client.submit(_spec(client, seed=3), priority=0)
    urgent_record, low_record = urgent.wait(timeout_s=300), low.wait(timeout_s=300)
    assert urgent_record["state"] == low_record["state"] == "succeeded", (urgent.logs(), low.logs())
    assert "pausing for" not in low.logs(), low.logs()
    assert low_record["attempts"] == 1, low.logs()
    assert urgent_record["attempts"] == 2  # one per segment
    assert low_record["started_at"] > urgent_record["started_at"]  # after the urgent job's second segment began
