"""Drive one video render on a group of pool workers: every stage advances a few queue ticks per call.

All stages run concurrently inside each round of calls (their ring traffic needs all of them), and the
driver reports progress between rounds. Stage 0 streams the MP4 itself, so no frames pass through the
driver and its memory does not grow with the video.
"""

from __future__ import annotations

import time

import ray
from tqdm import tqdm

from runtime.pool import DevicePool
from runtime.video_task import VideoTask
from runtime.video_worker import advance_video, begin_video, end_video


def run_video_render(
    pool: DevicePool, task: VideoTask, degree: int, progress: bool = True, ticks_per_call: int = 4
) -> dict:
    """Render ``task`` with ``degree`` pipeline stages on the pool's first workers; returns metadata."""
    if degree > pool.size:
        raise ValueError(f"parallel.degree: {degree} stages exceed the pool's {pool.size} workers")
    indices = list(range(degree))
    workers = [pool.workers[i] for i in indices]
    started = time.perf_counter()
    with pool.group(indices) as group:
        begins = ray.get([w.execute.remote(begin_video, task) for w in workers])
        ticks = task.frames // task.block_frames + task.steps - 1
        denoise_started = time.perf_counter()
        with tqdm(total=ticks, desc="frame blocks", unit="tick", disable=not progress) as bar:
            done = 0
            while done < ticks:
                done = ray.get([w.execute.remote(advance_video, ticks_per_call) for w in workers])[0]
                bar.update(done - bar.n)
        ends = ray.get([w.execute.remote(end_video) for w in workers])
        render_s = time.perf_counter() - denoise_started
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
        "steps": task.steps,
        "fps": task.fps,
        "stage_boundaries": head["boundaries"],
        "layer_costs_s": head["layer_costs_s"],
        "decode_s_per_block": head["block_overhead_s"],
        "frames_per_s": head["frames"] / render_s,
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
