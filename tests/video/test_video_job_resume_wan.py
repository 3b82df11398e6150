"""A service video job's worker side on a full WanPipeline directory (causal 3-D VAE, multistep UniPC):
stopped at a tick boundary and continued from its checkpoint, the MP4 equals the uninterrupted one,
because the checkpoint carries the VAE's block-to-block cache (without it the frames differ)."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_jobs import run_on_worker

from cluster.jobs.video import VideoSpec
from runtime.device import device_slot
from runtime.worker import Worker


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan") / "tiny-wan")


def _task(wan_dir, video_path) -> tuple[VideoSpec, str]:
    spec = VideoSpec(
        model=str(wan_dir),
        dtype="float32",
        prompt="red and yellow stripes",
        height=32,
        width=32,
        frames=24,  # 6 latent frames: 3 blocks of 2, 3 steps: 5 ticks
        block_frames=8,
        context_frames=1,
        steps=3,
        seed=2,
        fps=8.0,
    )
    return spec, str(video_path)


def _frames(path) -> np.ndarray:
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack([frame for frame in reader])
    finally:
        reader.close()


def _render(worker, task, block_dir, resume=None, stop_at=None):
    spec, video_path = task
    return run_on_worker(worker, spec, video_path, block_dir, resume, stop_at)


def test_resume_with_a_causal_vae_equals_uninterrupted(wan_dir, tmp_path):
    worker = Worker(0, device_slot("cpu"))
    ref = _render(worker, _task(wan_dir, tmp_path / "ref.mp4"), tmp_path / "ref")
    assert ref["frames_written"] == 1 + 4 * 5
    state = _render(worker, _task(wan_dir, tmp_path / "a.mp4"), tmp_path / "a", stop_at=3)
    assert state["blocks_finished"] == 1 and state["decoder"]["first"] is False
    resumed = _render(worker, _task(wan_dir, tmp_path / "a.mp4"), tmp_path / "a", resume=state)
    # the first block's 2 latent frames decoded to 1 + 4 frames before the stop (not its 8 frames in Tessera's
    # count): what a resumed job's frames/s leaves out
    assert (resumed["frames_before"], resumed["frames_written"]) == (1 + 4, 1 + 4 * 5)
    np.testing.assert_array_equal(_frames(tmp_path / "a.mp4"), _frames(tmp_path / "ref.mp4"))
    # the decoder cache is state: resumed without it, the frames after the resume point differ
    _render(worker, _task(wan_dir, tmp_path / "b.mp4"), tmp_path / "a", resume={**state, "decoder": None})
    cut, ref_frames = _frames(tmp_path / "b.mp4"), _frames(tmp_path / "ref.mp4")
    assert cut.shape != ref_frames.shape or not np.array_equal(cut, ref_frames)
