"""LTX-Video as a service video job: a tiny LTXPipeline directory renders through ``Client.submit`` on 2
frame-pipeline stages (real Ray) to the same MP4 as one worker; a job stopped at a tick boundary and continued
from its checkpoint equals the uninterrupted one (the block decoder's tail latent travels in it)."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from _tiny_ltx import save_tiny_ltx
from _video_jobs import decoded_frames, render_on_worker

from cluster.client import Client
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from runtime.device import device_slot
from runtime.jobs.video_session import open_video_session
from runtime.pool import PoolConfig
from runtime.worker import Worker

pytestmark = pytest.mark.slow

RENDER = dict(
    prompt="red circle on green",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=64,
    width=64,
    frames=48,  # 6 latent frames at LTX's 8: 3 blocks of 2, 25 + 16 = 41 video frames
    block_frames=16,
    context_frames=8,  # one latent frame of each neighbour
    steps=2,
    seed=6,
    fps=8.0,
)
TICKS = 3 + 2 - 1


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


def _frames(path) -> np.ndarray:
    return decoded_frames({"outputs": {"video": str(path)}})


def _render(worker, ltx_dir, path, block_dir, resume=None, stop_at=None):
    return render_on_worker(worker, ltx_dir, RENDER, path, block_dir, resume, stop_at)


@pytest.fixture(scope="module")
def one_worker(ltx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ltx-one")
    report = _render(Worker(0, device_slot("cpu")), ltx_dir, out / "video.mp4", out / "blocks")
    return report, out / "video.mp4"


def test_resume_equals_uninterrupted(ltx_dir, one_worker, tmp_path):
    report, reference = one_worker
    assert report["frames_written"] == 1 + 8 * 5 and report["blocks_finished"] == [0, 1, 2]
    worker = Worker(0, device_slot("cpu"))
    state = _render(worker, ltx_dir, tmp_path / "a.mp4", tmp_path / "a", stop_at=2)
    # block 0 finished and held back by the decoder (8 latent frames of decode context each way, the default)
    assert state["blocks_finished"] == 1 and state["decoder"]["received"] == 2 and state["decoder"]["decoded"] == 0
    _render(worker, ltx_dir, tmp_path / "a.mp4", tmp_path / "a", resume=state)
    np.testing.assert_array_equal(_frames(tmp_path / "a.mp4"), _frames(reference))
    # the held latent frames are state: a checkpoint without them is refused, not rendered with frames missing
    with pytest.raises(Exception, match="holds no decoder state"):
        _render(worker, ltx_dir, tmp_path / "b.mp4", tmp_path / "a", resume={**state, "decoder": None})


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    state = tmp_path_factory.mktemp("ltx-jobs") / "state"
    pool = PoolConfig(workers=2, device="cpu", group_timeout_s=30)
    client = Client(state_dir=state, pool=pool, checkpoint_every=2)
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _submit(client, ltx_dir, outputs, parallel: dict) -> dict:
    spec = {"job": "video", "model": str(ltx_dir), "output_dir": str(outputs), "parallel": parallel, **RENDER}
    job = client.submit(spec)
    record = job.wait(timeout_s=300)
    assert record["state"] == "succeeded", job.logs()
    return record


def test_job_through_client_on_two_stages(client, ltx_dir, one_worker, tmp_path):
    record = _submit(client, ltx_dir, tmp_path, {"strategy": "frames", "degree": 2})
    assert record["steps_done"] == TICKS
    frames = decoded_frames(record)
    assert frames.shape == (41, 64, 64, 3)
    np.testing.assert_array_equal(frames, _frames(one_worker[1]))  # 2 stages: the 1-worker video


def test_sequence_job_through_client(client, ltx_dir, tmp_path):
    """The whole video as one sequence over 2 workers (Ulysses) equals one worker rendering it as one block."""
    spec = VideoSpec(
        model=str(ltx_dir),
        dtype="float32",
        parallel=VideoParallelSpec("none", 1),
        **{**RENDER, "block_frames": RENDER["frames"], "context_frames": 0},
    )
    reference = tmp_path / "one.mp4"
    worker = Worker(0, device_slot("cpu"))
    worker.begin(open_video_session, spec, None, video_path=str(reference))
    worker.advance(None)
    worker.finish()
    record = _submit(client, ltx_dir, tmp_path / "outputs", {"strategy": "sequence", "degree": 2})
    assert record["steps_done"] == RENDER["steps"]  # one block: a tick per step
    frames = decoded_frames(record)
    assert frames.shape == (41, 64, 64, 3)
    np.testing.assert_array_equal(frames, _frames(reference))
