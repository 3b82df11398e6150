"""Per-rank bodies of the frame pipeline under CFG parallel (``test_frame_cfg_split``): a render checkpointed
part-way (every rank's share merged into the job state, as the controller merges them) and a render resumed from
a merged state, each through ``VideoSession`` on the spawned ranks' group."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from _video_workers import keep_latents, open_session

from runtime.jobs.video_state import merge_stage_states


def checkpointed_render(rank: int, world: int, model_dir: str, out_dir: str, fields: dict, tick: int) -> dict:
    """The whole render, with the job state merged from every rank's snapshot at ``tick`` on the way."""
    session = open_session(world, model_dir, f"{out_dir}/checkpointed-{world}.mp4", fields)
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
    session = open_session(world, model_dir, f"{out_dir}/resumed-{world}.mp4", fields)
    session.resume(state)
    latents = keep_latents(session)
    session.advance()
    return {"latents": latents, "report": session.finish()}
