"""Through the service: a sequence-parallel job on a model whose family has no sequence plan is refused at
submit, naming the field and the family, and nothing is stored; so are its bad fields."""

import pytest
import ray

from cluster.client import Client
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


def _job(client, **parallel) -> dict:
    return {
        "height": 64,
        "width": 64,
        "steps": 2,
        "output_dir": str(client.outputs),
        "parallel": {"strategy": "sequence", "degree": 2, **parallel},
    }


@pytest.mark.parametrize(
    "parallel,field",
    [
        ({}, "parallel.strategy"),  # the built-in model's family (sd) runs none and patch
        ({"degree": 2, "ring": "two"}, "parallel.ring"),
        ({"degree": 0}, "parallel.degree"),
    ],
)
def test_sequence_jobs_the_service_cannot_run_are_refused_and_not_stored(client, parallel, field):
    before = client.jobs()
    with pytest.raises(SpecError) as caught:
        client.submit(_job(client, **parallel))
    assert caught.value.field == field, str(caught.value)
    if field == "parallel.strategy":
        assert "sd family" in str(caught.value) and "'sequence'" in str(caught.value)
    assert client.jobs() == before
