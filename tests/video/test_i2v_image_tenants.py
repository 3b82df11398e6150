"""An image-to-video job's ``image`` inside another tenant's job outputs is refused at submit, in the words of a
missing file (so the refusal says nothing of the other job): before, a tenant could condition a video on any
file the service could read, another studio's renders among them. Its own outputs, and the open service's
(one tenant), are read as before. An image deleted after the submit fails the job with the worker's own error
as its ``error``, not Ray's coloured traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from _tiny_wan22 import save_tiny_wan_i2v

from cluster.client import Client
from cluster.errors import SpecError
from runtime.pool import PoolConfig

A, B = {"name": "studio-a"}, {"name": "studio-b"}


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory):
    return str(save_tiny_wan_i2v(tmp_path_factory.mktemp("i2v") / "tiny-wan-i2v"))


def _submit(client: Client, spec: dict, tenant: dict | None) -> dict:
    try:
        return ray.get(client.controller.submit.remote(spec, 0, None, tenant))
    except ray.exceptions.RayTaskError as err:
        raise err.as_instanceof_cause() from None


def test_another_tenants_output_is_no_image_to_read(ray_local, i2v_dir, tmp_path):
    client = Client(state_dir=tmp_path / "state", pool=PoolConfig(workers=1, device="cpu"))
    try:
        image_job = {"height": 64, "width": 64, "steps": 2, "seed": 1, "output_dir": str(tmp_path / "out")}
        record = _submit(client, image_job, A)
        rendered = client.job(record["id"]).wait(timeout_s=180)
        assert rendered["state"] == "succeeded", client.job(record["id"]).logs()
        image = rendered["outputs"]["image"]
        video = {
            "job": "video", "model": i2v_dir, "image": image, "height": 32, "width": 32, "frames": 8,
            "block_frames": 8, "steps": 2, "output_dir": str(tmp_path / "out"),
            "parallel": {"strategy": "none", "degree": 1},
        }
        with pytest.raises(SpecError) as refused:
            _submit(client, video, B)
        assert refused.value.field == "image" and "no such file" in str(refused.value)
        for tenant in (A, None):  # its own tenant's; the open service's
            accepted = _submit(client, video, tenant)
            client.job(accepted["id"]).cancel()
        copy = tmp_path / "gone.png"
        copy.write_bytes(Path(image).read_bytes())
        doomed = client.submit({**video, "image": str(copy)})
        copy.unlink()  # after the submit's check: the worker finds no file
        failed = doomed.wait(timeout_s=180)
        assert failed["state"] == "failed", doomed.logs()
        assert failed["error"].startswith("ValueError: image: no such file"), failed["error"]
        assert "\x1b[" not in failed["error"] and "pid=" not in failed["error"]
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
