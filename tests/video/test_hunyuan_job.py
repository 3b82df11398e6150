"""HunyuanVideo as a service video job: a tiny HunyuanVideoPipeline directory renders through ``Client.submit`` on 2
frame-pipeline stages (real Ray) to the same MP4 as one worker, and on 2 workers' row bands (the whole video as one
block; its parity with one worker: ``test_hunyuan_bands.py``); a job stopped at a tick boundary and continued
from its checkpoint equals the uninterrupted one (the block decoder's kept latent frames travel in it); a bad
render is refused at submit, naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _video_jobs import decoded_frames, render_on_worker

from cluster.client import Client
from cluster.errors import SpecError
from runtime.device import device_slot
from runtime.pool import PoolConfig
from runtime.worker import Worker

pytestmark = pytest.mark.slow

RENDER = dict(
    prompt="red and blue stripes",
    guidance_scale=6.0,  # HunyuanVideo's embedded guidance
    height=32,
    width=32,
    frames=24,  # 6 latent frames: 3 blocks of 2, 5 + 8 + 8 = 21 video frames
    block_frames=8,
    context_frames=4,  # one latent frame of each neighbour
    steps=2,
    seed=6,
    fps=8.0,
)
TICKS = 3 + 2 - 1


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny-hunyuanvideo")


def _frames(path) -> np.ndarray:
    return decoded_frames({"outputs": {"video": str(path)}})


def _render(worker, model_dir, path, block_dir, resume=None, stop_at=None):
    return render_on_worker(worker, model_dir, RENDER, path, block_dir, resume, stop_at)


@pytest.fixture(scope="module")
def one_worker(hunyuan_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hunyuan-one")
    report = _render(Worker(0, device_slot("cpu")), hunyuan_dir, out / "video.mp4", out / "blocks")
    return report, out / "video.mp4"


def test_resume_equals_uninterrupted(hunyuan_dir, one_worker, tmp_path):
    report, reference = one_worker
    assert report["frames_written"] == 1 + 4 * 5 and report["blocks_finished"] == [0, 1, 2]
    worker = Worker(0, device_slot("cpu"))
    state = _render(worker, hunyuan_dir, tmp_path / "a.mp4", tmp_path / "a", stop_at=2)
    # block 0 finished and held back (its tiles reach 4 latent frames past it): its latent frames are the state
    decoder = state["decoder"]
    assert state["blocks_finished"] == 1 and (decoder["received"], decoder["decoded"]) == (2, 0)
    assert decoder["held"].shape[2] == 2
    _render(worker, hunyuan_dir, tmp_path / "a.mp4", tmp_path / "a", resume=state)
    np.testing.assert_array_equal(_frames(tmp_path / "a.mp4"), _frames(reference))
    # the held frames are state: a checkpoint without them is refused, not rendered with a block lost
    with pytest.raises(ValueError, match="holds no decoder state"):
        _render(worker, hunyuan_dir, tmp_path / "b.mp4", tmp_path / "a", resume={**state, "decoder": None})


def test_job_through_client_on_two_stages(ray_local, hunyuan_dir, one_worker, tmp_path):
    client = Client(
        state_dir=tmp_path / "state",
        pool=PoolConfig(workers=2, device="cpu", group_timeout_s=30),
        checkpoint_every=2,
    )
    try:
        spec = {
            "job": "video",
            "model": str(hunyuan_dir),
            "output_dir": str(tmp_path / "outputs"),
            "parallel": {"strategy": "frames", "degree": 2},
            **RENDER,
        }
        with pytest.raises(SpecError, match="height"):
            client.submit({**spec, "height": 40})
        job = client.submit(spec)
        record = job.wait(timeout_s=300)
        assert record["state"] == "succeeded", job.logs()
        assert record["steps_done"] == TICKS
        frames = decoded_frames(record)
        assert frames.shape == (21, 32, 32, 3)
        np.testing.assert_array_equal(frames, _frames(one_worker[1]))  # 2 stages: the 1-worker video
        for strategy in ("patch", "sequence"):  # bands; Tessera's Ulysses (the tiny model's 2 heads on 2 workers)
            whole = client.submit({**spec, "parallel": {"strategy": strategy, "degree": 2}})
            record = whole.wait(timeout_s=300)
            assert record["state"] == "succeeded", whole.logs()
            assert record["steps_done"] == RENDER["steps"]  # one block: a tick per step
            assert decoded_frames(record).shape == (21, 32, 32, 3)
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
