"""Wan 2.2 and image-to-video as service video jobs through ``Client.submit`` (real Ray): a Wan 2.2 I2V
two-expert directory on 2 frame-pipeline stages with its conditioning ``image`` (made absolute at submit, read
by the workers) renders the same MP4 as one worker in process; a TI2V-5B directory renders with
``parallel=none``."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from _tiny_wan22 import save_test_image, save_tiny_wan_i2v, save_tiny_wan_ti2v
from _video_jobs import decoded_frames

from cluster.client import Client
from cluster.jobs.video import VideoSpec
from runtime.device import device_slot
from runtime.jobs.video_session import open_video_session
from runtime.pool import PoolConfig
from runtime.worker import Worker

pytestmark = pytest.mark.slow

RENDER = dict(
    prompt="red and yellow stripes",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=32,
    width=32,
    frames=16,  # 4 latent frames: 2 blocks of 2, 13 video frames
    block_frames=8,
    context_frames=4,
    steps=4,  # 2 on each expert (BOUNDARY_RATIO)
    seed=6,
    fps=8.0,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wan22-job")
    return {
        "i2v": save_tiny_wan_i2v(root / "i2v", two_experts=True),
        "ti2v": save_tiny_wan_ti2v(root / "ti2v"),
        "image": save_test_image(root / "first.png"),
    }


def test_jobs_through_client(ray_local, models, tmp_path, monkeypatch):
    worker = Worker(0, device_slot("cpu"))
    spec = VideoSpec(
        model=str(models["i2v"]), image=str(models["image"]), parallel={"strategy": "none", "degree": 1}, **RENDER
    )
    worker.begin(open_video_session, spec, None, video_path=str(tmp_path / "one.mp4"), block_dir=str(tmp_path / "b"))
    worker.advance(None)
    worker.finish()
    reference = decoded_frames({"outputs": {"video": str(tmp_path / "one.mp4")}})

    client = Client(state_dir=tmp_path / "state", pool=PoolConfig(workers=2, device="cpu", group_timeout_s=30))
    monkeypatch.chdir(models["image"].parent)  # a relative image path: resolved at submit
    try:
        outputs = str(tmp_path / "outputs")
        i2v = client.submit(
            {
                "job": "video",
                "model": str(models["i2v"]),
                "image": models["image"].name,
                "output_dir": outputs,
                "parallel": {"strategy": "frames", "degree": 2},
                **RENDER,
            }
        )
        record = i2v.wait(timeout_s=300)
        assert record["state"] == "succeeded", i2v.logs()
        frames = decoded_frames(record)
        assert frames.shape == (13, 32, 32, 3)
        np.testing.assert_array_equal(frames, reference)  # 2 stages: the 1-worker video
        ti2v = client.submit(
            {
                "job": "video",
                "model": str(models["ti2v"]),
                "output_dir": outputs,
                "parallel": {"strategy": "none", "degree": 1},
                **dict(RENDER, height=64, width=64, steps=2),
            }
        )
        record = ti2v.wait(timeout_s=300)
        assert record["state"] == "succeeded", ti2v.logs()
        assert decoded_frames(record).shape == (13, 64, 64, 3)
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
