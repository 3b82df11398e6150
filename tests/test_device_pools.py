"""A controller owning two named pools on two Ray nodes: a job's `device` picks the pool, a job's
segments may run on different pools (Hybrid SD style), and requests no pool can serve are refused.

The pools are told apart the way a farm tells GPU kinds apart: each node is started with a custom
Ray resource ("big" or "small") and each pool's workers ask for one unit of it.
"""

import numpy as np
import pytest
import ray
from _job_outputs import job_image, job_metadata
from _two_nodes import two_ray_nodes

from cluster.client import Client
from cluster.errors import SpecError
from runtime.pool import PoolConfig


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with two_ray_nodes(2, {"big": 2}, 1, {"small": 1}):
        root = tmp_path_factory.mktemp("pools")
        client = Client(
            state_dir=root / "state",
            pools=[
                PoolConfig(name="big", workers=2, device="cpu", resources={"big": 1}),
                PoolConfig(name="small", workers=1, device="cpu", resources={"small": 1}),
            ],
            checkpoint_every=2,
        )
        client.outputs = root / "outputs"
        yield client
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)


def _spec(client, **extra):
    spec = {"height": 64, "width": 64, "steps": 6, "seed": 4, "output_dir": str(client.outputs)}
    spec.update(extra)
    return spec


def _node_of(client, pool_name: str) -> set[str]:
    info = ray.get(client.controller.info.remote())
    return {w["node_id"] for w in info["pool"] if w["pool"] == pool_name}


def test_the_pools_sit_on_their_labelled_nodes(farm):
    info = ray.get(farm.controller.info.remote())
    assert [(p["name"], p["workers"]) for p in info["pools"]] == [("big", [0, 1]), ("small", [2])]
    assert len(_node_of(farm, "big")) == 1 and _node_of(farm, "big") != _node_of(farm, "small")


def test_a_job_runs_only_in_the_pool_its_device_names(farm):
    small = farm.submit(_spec(farm, device="small")).wait(timeout_s=180)
    big = farm.submit(_spec(farm, device="big", parallel={"strategy": "patch", "degree": 2})).wait(timeout_s=180)
    assert small["state"] == big["state"] == "succeeded"
    assert [(s["pool"], s["workers"]) for s in job_metadata(small)["segments"]] == [("small", [2])]
    assert [(s["pool"], s["workers"]) for s in job_metadata(big)["segments"]] == [("big", [0, 1])]
    assert job_metadata(small)["device"] == "cpu"
    by_kind = farm.submit(_spec(farm, device="cpu")).wait(timeout_s=180)  # a device kind: any cpu pool
    assert by_kind["state"] == "succeeded"


def test_segments_on_two_pools_equal_one_uninterrupted_render(farm):
    whole = farm.submit(_spec(farm, device="small")).wait(timeout_s=180)
    split = farm.submit(
        _spec(farm, segments=[{"steps": 4, "device": "big"}, {"steps": 2, "device": "small"}])
    ).wait(timeout_s=180)
    assert split["state"] == "succeeded", split["error"]
    segments = job_metadata(split)["segments"]
    assert [(s["pool"], s["steps"]) for s in segments] == [("big", [0, 4]), ("small", [4, 6])]
    assert np.array_equal(job_image(split), job_image(whole))  # the state moved between pools exactly


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"device": "h100"}, "device"),
        ({"device": "cuda"}, "device"),
        ({"device": "small", "parallel": {"strategy": "patch", "degree": 2}}, "parallel.degree"),
        ({"segments": [{"steps": 3}, {"steps": 3, "device": "tpu"}]}, "segments[1].device"),
        ({"device": 3}, "device"),
    ],
)
def test_a_device_no_pool_serves_is_refused_and_nothing_is_stored(farm, extra, field):
    before = len(farm.jobs())
    with pytest.raises(SpecError) as refused:
        farm.submit(_spec(farm, **extra))
    assert refused.value.field == field
    assert len(farm.jobs()) == before
