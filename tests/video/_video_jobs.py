"""Helpers of the service video-job tests: a controller of CPU workers, a tiny video spec, its decoded frames,
waiting for a tick."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

TICKS = 6 + 3 - 1
"""Queue ticks of ``video_spec``'s job: 6 blocks of 2 frames, 3 steps each."""


def video_spec(outputs, **changes) -> dict:
    """A video job of the built-in video model at a tiny size (32x32, 12 frames, 3 steps)."""
    spec = {
        "job": "video",
        "frames": 12,
        "block_frames": 2,
        "steps": 3,
        "height": 32,
        "width": 32,
        "seed": 4,
        "output_dir": str(outputs),
        "parallel": {"strategy": "frames", "degree": "auto"},  # the free workers, up to 6 stages
    }
    return {**spec, **changes}


def decoded_frames(record: dict) -> np.ndarray:
    """The frames of a finished job's video.mp4, decoded."""
    reader = imageio.get_reader(record["outputs"]["video"], format="FFMPEG")
    try:
        return np.stack([frame for frame in reader])  # list(reader) asks its length: inf
    finally:
        reader.close()


def wait_for_tick(job, tick: int, checkpoint: bool = False, timeout_s: float = 120) -> dict:
    """The job's record once it has done ``tick`` ticks (and, with ``checkpoint``, checkpointed there),
    or once it has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = job.status()
        if record["state"] in ("succeeded", "failed"):
            return record
        if record["steps_done"] >= tick and (not checkpoint or (record["checkpoint_step"] or 0) >= tick):
            return record
        time.sleep(0.05)
    raise TimeoutError(f"job {job.id} did not reach tick {tick}")


def render_on_worker(worker, model_dir, render: dict, path, block_dir, resume=None, stop_at=None):
    """One worker's render of ``render`` (VideoSpec fields; strategy none) from ``model_dir``: ``run_on_worker``."""
    from cluster.jobs.video import VideoParallelSpec, VideoSpec

    spec = VideoSpec(model=str(model_dir), dtype="float32", parallel=VideoParallelSpec("none", 1), **render)
    return run_on_worker(worker, spec, path, block_dir, resume, stop_at)


def run_on_worker(worker, spec, path, block_dir, resume=None, stop_at=None):
    """One worker's render of a video spec as the service's worker runs it: to the end (the finish report), or
    stopped at tick ``stop_at`` as a pause stops it (the merged state, saved and loaded as the controller reads
    checkpoint.pt)."""
    import io

    import torch

    from runtime.jobs.video_session import open_video_session
    from runtime.jobs.video_state import merge_stage_states

    worker.begin(open_video_session, spec, resume, video_path=str(path), block_dir=str(block_dir))
    if stop_at is not None:
        assert worker.advance(stop_at) == stop_at
        state = merge_stage_states([worker.snapshot()])
        worker._close_session()  # a pause: the stage is abandoned, the block files stay
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)
    worker.advance(None)
    return worker.finish()


@contextmanager
def video_client(state: Path, workers: int) -> Iterator:
    """A ``cluster.client.Client`` whose controller (state in ``state``) runs a pool of ``workers`` CPU workers and
    checkpoints every 2 ticks; stopped and killed on exit."""
    import ray

    from cluster.client import Client
    from runtime.pool import PoolConfig

    client = Client(state_dir=state, pool=PoolConfig(workers=workers, device="cpu", group_timeout_s=30),
                    checkpoint_every=2)
    try:
        yield client
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
