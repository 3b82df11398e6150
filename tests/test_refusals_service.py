"""A representative subset of the malformed submissions (two of each family of mistake, and every one only
the service can judge) through a real controller: each refused with a SpecError naming its field, and the
job store unchanged."""

from __future__ import annotations

import pytest
import ray
from _malformed_specs import IMAGE, MALFORMED, REUSED_TOKEN, representative
from test_refusals import assert_names_the_field

from cluster.client import Client
from cluster.errors import SpecError
from runtime.pool import PoolConfig

THROUGH_SERVICE = representative(MALFORMED)


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"))
    client.outputs = str(root / "outputs")
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def test_the_controller_refuses_naming_the_field_and_stores_nothing(client):
    first = client.submit({**IMAGE, "output_dir": client.outputs}, client_token=REUSED_TOKEN)
    assert first.wait(timeout_s=120)["state"] == "succeeded"
    before = client.jobs()
    assert len(THROUGH_SERVICE) >= 15
    for row in THROUGH_SERVICE:
        spec = {"output_dir": client.outputs, **row.spec()}
        with pytest.raises(SpecError) as caught:
            client.submit(spec, **row.submit)
        assert_names_the_field(caught.value, row)
    assert client.jobs() == before
