"""Worker-side entry points of a service video job, run through ``Worker.execute`` (no Ray here).

Like ``runtime.video_worker``'s, but the stage can start from a checkpoint (``runtime.video_state``)
and stage 0 keeps finished blocks as one MP4 segment each (``pipelines.video_blocks``) instead of
streaming one MP4, so that the job can stop at a tick boundary and continue elsewhere.
``advance_video`` and ``end_video`` of ``runtime.video_worker`` drive the stage from there.
"""

from __future__ import annotations

import time
from typing import Any

import torch.distributed as dist

from runtime import memory
from runtime.video_task import VideoTask
from runtime.video_worker import load_video


def begin_video_job(worker, task: VideoTask, block_dir: str, resume: dict[str, Any] | None) -> dict:
    """Open this worker's stage of ``task``; ``resume``: the merged state of a checkpoint, or None."""
    from pipelines.video_blocks import BlockFileWriter
    from runtime.video_session import VideoSession
    from runtime.video_state import load_decoder_state, load_stage_state

    worker._close_session()
    started = time.perf_counter()
    pipe, hit = load_video(worker, task.model_path, task.dtype)
    load_s = time.perf_counter() - started
    resident = memory.current_bytes(worker.device)
    memory.reset_peak(worker.device)
    group = dist.group.WORLD if dist.is_initialized() else None
    blocks = task.frames // task.block_frames
    first = resume["blocks_finished"] if resume else 0

    def make_writer(t: VideoTask) -> BlockFileWriter:
        return BlockFileWriter(block_dir, t.video_path, t.fps, blocks, first_block=first)

    worker.session = VideoSession(pipe, task, group, make_writer=make_writer)
    if resume is not None:
        load_stage_state(worker.session.pipeline, resume)
        if resume.get("decoder") is not None and worker.session.decode is not None:
            load_decoder_state(worker.session.decode, resume["decoder"])
    return {"cache_hit": hit, "load_s": load_s, "resident_bytes": resident}


def snapshot_video_job(worker) -> dict[str, Any]:
    """This stage's share of the state at the current tick boundary (all stages at once)."""
    from runtime.video_state import export_decoder_state, export_stage_state

    session = worker._session()
    state = export_stage_state(session.pipeline)  # first: stage 0 may finish (and decode) blocks here
    if session.decode is not None:
        state["decoder"] = export_decoder_state(session.decode)
    return state
