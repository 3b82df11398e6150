"""CogVideoX as the service's worker renders it: a tiny CogVideoX 1.5 directory (DPM scheduler: per-step noise from
each block's generator) stopped at a tick boundary and continued from its checkpoint (the DPM state, the block
generators and the VAE's conv cache in it) equals the uninterrupted render. Its jobs through ``Client.submit``
(strategy none and 2 frame stages, real Ray) are in test_video_jobs, on that module's controller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_cogvideox import save_tiny_cogvideox
from _video_jobs import decoded_frames, render_on_worker

from runtime.device import device_slot
from runtime.worker import Worker

RENDER = dict(
    prompt="red circle on green",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=32,
    width=32,
    frames=24,  # 6 latent frames: 3 blocks of 2, 4 video frames each
    block_frames=8,
    context_frames=4,  # one latent frame of each neighbour (one token frame of 1.5's temporal patch)
    steps=3,
    seed=6,
    fps=8.0,
)


@pytest.fixture(scope="module")
def cog_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_cogvideox(tmp_path_factory.mktemp("cogvideox") / "tiny-cogvideox-1.5", "1.5", "dpm")


def _frames(path) -> np.ndarray:
    return decoded_frames({"outputs": {"video": str(path)}})


def _render(worker, cog_dir, path, block_dir, resume=None, stop_at=None):
    return render_on_worker(worker, cog_dir, RENDER, path, block_dir, resume, stop_at)


@pytest.fixture(scope="module")
def one_worker(cog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cogvideox-one")
    report = _render(Worker(0, device_slot("cpu")), cog_dir, out / "video.mp4", out / "blocks")
    return report, out / "video.mp4"


def test_resume_equals_uninterrupted(cog_dir, one_worker, tmp_path):
    report, reference = one_worker
    assert report["frames_written"] == 24 and report["blocks_finished"] == [0, 1, 2]
    worker = Worker(0, device_slot("cpu"))
    state = _render(worker, cog_dir, tmp_path / "a.mp4", tmp_path / "a", stop_at=2)
    assert state["blocks_finished"] == 0 and sorted(state["latents"]) == [0, 1]
    assert all(s.get("frame_rng_state") is not None for s in state["schedulers"].values())
    _render(worker, cog_dir, tmp_path / "a.mp4", tmp_path / "a", resume=state)
    np.testing.assert_array_equal(_frames(tmp_path / "a.mp4"), _frames(reference))
    # the block generators are state: resumed with fresh ones, the blocks in flight draw other noise
    fresh = {b: {k: v for k, v in s.items() if k != "frame_rng_state"} for b, s in state["schedulers"].items()}
    _render(worker, cog_dir, tmp_path / "b.mp4", tmp_path / "b", resume={**state, "schedulers": fresh})
    assert not np.array_equal(_frames(tmp_path / "b.mp4"), _frames(reference))
