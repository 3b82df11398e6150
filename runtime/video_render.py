"""Drive one video render on a group of pool workers: every stage advances a few queue ticks per call.

All stages run concurrently inside each round of calls (their ring traffic needs all of them), and the
driver reports progress between rounds. Stage 0 streams the MP4 itself, so no frames pass through the
driver and its memory does not grow with the video.

A service job (``block_dir`` given) keeps finished blocks as MP4 segments, may start from a
checkpoint, has its state gathered every ``checkpoint_every`` ticks, and stops at a tick boundary
when ``on_tick`` says so (``VideoRenderStopped`` carries the state there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from tqdm import tqdm

from parallel.frames.schedule import ticks as schedule_ticks
from runtime.pool import DevicePool
from runtime.pool_set import PoolSet
from runtime.video_task import VideoTask
from runtime.video_worker import advance_video, begin_video, end_video


class VideoRenderStopped(Exception):
    """``on_tick`` asked the render to stop at a tick boundary; ``checkpoint`` is the state there."""

    def __init__(self, ticks_done: int, checkpoint: dict[str, Any]) -> None:
        super().__init__(f"stopped after {ticks_done} ticks")
        self.ticks_done = ticks_done
        self.checkpoint = checkpoint


def gather_video_state(workers: list) -> dict[str, Any]:
    """The job's state at the current tick boundary, merged from every stage (stage 0 first)."""
    from runtime.video_job_worker import snapshot_video_job
    from runtime.video_state import merge_stage_states

    return merge_stage_states(get_all([w.execute.remote(snapshot_video_job) for w in workers]))


def get_all(refs: list) -> list:
    """``ray.get(refs)``, but failing as soon as any call fails: when a stage's worker dies, its peers
    wait on the ring until the group's timeout, and the caller should not wait with them."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    return ray.get(refs)


def run_video_render(
    pool: DevicePool | PoolSet,
    task: VideoTask,
    degree: int,
    progress: bool = True,
    ticks_per_call: int = 4,
    indices: list[int] | None = None,
    block_dir: str | None = None,
    resume: dict[str, Any] | None = None,
    on_tick: Callable[[int], bool] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict:
    """Render ``task`` with ``degree`` pipeline stages on pool workers ``indices`` (the first ones by
    default); returns metadata. With ``block_dir`` (a service job): finished blocks go there as
    files, the render continues from ``resume`` (a merged checkpoint state), ``on_tick`` is called
    with the ticks done after every call (False stops: VideoRenderStopped) and the state goes to
    ``on_checkpoint`` every ``checkpoint_every`` ticks."""
    if degree > pool.size:
        raise ValueError(f"parallel.degree: {degree} stages exceed the pool's {pool.size} workers")
    indices = list(range(degree)) if indices is None else list(indices)
    if len(indices) != degree:
        raise ValueError(f"parallel.degree: {degree} stages need as many workers, got {indices}")
    if resume is not None and block_dir is None:
        raise ValueError("resume: a checkpointed video render keeps its blocks in block_dir")
    workers = [pool.workers[i] for i in indices]
    started = time.perf_counter()
    with pool.group(indices) as group:
        if block_dir is None:
            begins = ray.get([w.execute.remote(begin_video, task) for w in workers])
        else:
            from runtime.video_job_worker import begin_video_job

            begins = ray.get([w.execute.remote(begin_video_job, task, block_dir, resume) for w in workers])
        ticks = schedule_ticks(task.frames // task.block_frames, task.steps, task.block_stride)
        first = resume["tick"] if resume else 0
        denoise_started = time.perf_counter()
        with tqdm(total=ticks, initial=first, desc="frame blocks", unit="tick", disable=not progress) as bar:
            done = first
            while done < ticks:
                before = done
                done = get_all([w.execute.remote(advance_video, ticks_per_call) for w in workers])[0]
                bar.update(done - bar.n)
                if on_tick is not None and not on_tick(done):
                    raise VideoRenderStopped(done, gather_video_state(workers))
                crossed = checkpoint_every and done // checkpoint_every > before // checkpoint_every
                if crossed and on_checkpoint is not None and done < ticks:
                    on_checkpoint(gather_video_state(workers))
        ends = ray.get([w.execute.remote(end_video) for w in workers])
        render_s = time.perf_counter() - denoise_started
        first_frames = (resume["blocks_finished"] if resume else 0) * task.block_frames
        backend = group.spec.backend
    head = ends[0]
    return {
        "strategy": "frames",
        "degree": degree,
        "stages": degree,
        "backend": backend,
        "frames": head["frames"],
        "blocks": head["blocks"],
        "block_frames": task.block_frames,
        "context_frames": task.context_frames,
        "block_stride": task.block_stride,
        "steps": task.steps,
        "fps": task.fps,
        "stage_boundaries": head["boundaries"],
        "layer_costs_s": head["layer_costs_s"],
        "decode_s_per_block": head["block_overhead_s"],
        "frames_per_s": (head["frames"] - first_frames) / render_s,
        "resumed_from_tick": first,
        "frames_written": head["frames_written"],
        "timings": {
            "load_s": max(b["load_s"] for b in begins),
            "encode_s": max(e["encode_s"] for e in ends),
            "setup_s": max(e["setup_s"] for e in ends),
            "render_s": render_s,
            "decode_s": head["decode_s"],
            "total_s": time.perf_counter() - started,
        },
        "model_cache_hit": [b["cache_hit"] for b in begins],
        "workers": [_worker_summary(pool.infos[i], b, e) for i, b, e in zip(indices, begins, ends)],
    }


def _worker_summary(info: dict, begin: dict, end: dict) -> dict:
    summary = dict(info)
    summary.update(
        stage=end["stage"],
        layers=end["layers"],
        items=end["items"],
        compute_s=end["compute_s"],
        compute_cpu_s=end["compute_cpu_s"],
        decode_cpu_s=end["decode_cpu_s"],
        wait_s=end["wait_s"],
        bytes_sent_by_peer=end["bytes_sent_by_peer"],
        feature_cache_peak_bytes=end["feature_cache_peak_bytes"],
        peak_memory_bytes=end["peak_memory_bytes"],
        activation_peak_bytes=max(0, end["peak_memory_bytes"] - begin["resident_bytes"]),
    )
    return summary
