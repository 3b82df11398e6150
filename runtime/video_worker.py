"""Worker-side entry points of a video render, run through ``Worker.execute`` (no Ray here).

``begin_video`` loads the video pipeline through the worker's model cache and opens the worker's stage
as ``worker.session``; ``advance_video`` runs a few queue ticks; ``end_video`` closes the stage and
reports it with the worker's peak memory.
"""

from __future__ import annotations

import time

import torch.distributed as dist

from runtime import memory
from runtime.video_task import VideoTask


def load_video(worker, path: str, dtype: str):
    return worker.load_pipeline(path, dtype)


def begin_video(worker, task: VideoTask) -> dict:
    from runtime.video_session import VideoSession

    worker._close_session()
    started = time.perf_counter()
    pipe, hit = load_video(worker, task.model_path, task.dtype)
    load_s = time.perf_counter() - started
    resident = memory.current_bytes(worker.device)
    memory.reset_peak(worker.device)
    group = dist.group.WORLD if dist.is_initialized() else None
    worker.session = VideoSession(pipe, task, group)
    return {"cache_hit": hit, "load_s": load_s, "resident_bytes": resident}


def advance_video(worker, ticks: int | None) -> int:
    return worker._session().advance(ticks)


def end_video(worker) -> dict:
    report = worker._session().finish()
    report["peak_memory_bytes"] = memory.peak_bytes(worker.device)
    worker.session = None
    return report
