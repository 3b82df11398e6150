"""Per-rank bodies of the frame pipeline under CFG parallel (``test_frame_cfg_split``): a render checkpointed
part-way (every rank's share merged into the job state, as the controller merges them) and a render resumed from
a merged state, each through ``VideoSession`` on the spawned ranks' group."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from _video_workers import keep_latents

from runtime.jobs.video_state import merge_stage_states


def _session(rank: int, world: int, model_dir: str, out_dir: str, fields: dict, name: str):
    from cluster.jobs.video import VideoSpec
    from pipelines.families import family_for_dir
    from runtime.jobs.video_session import VideoSession

    task = VideoSpec(model=model_dir, **fields)
    pipe = family_for_dir(model_dir).load(model_dir, task.dtype, "cpu")
    group = dist.group.WORLD if world > 1 else None
    return VideoSession(pipe, task, group, video_path=f"{out_dir}/{name}-{world}.mp4")


def checkpointed_render(rank: int, world: int, model_dir: str, out_dir: str, fields: dict, tick: int) -> dict:
    """The whole render, with the job state merged from every rank's snapshot at ``tick`` on the way."""
    session = _session(rank, world, model_dir, out_dir, fields, "checkpointed")
    latents = keep_latents(session)
    session.advance(tick)
    share = session.snapshot()
    shares: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(shares, share)
    else:
        shares = [share]
    session.advance()
    return {"latents": latents, "report": session.finish(), "state": merge_stage_states(shares)}


def resumed_render(rank: int, world: int, model_dir: str, out_dir: str, fields: dict, state: dict) -> dict:
    """The render continued from a merged job state: the latents of the blocks that finish after it."""
    session = _session(rank, world, model_dir, out_dir, fields, "resumed")
    session.resume(state)
    latents = keep_latents(session)
    session.advance()
    return {"latents": latents, "report": session.finish()}
