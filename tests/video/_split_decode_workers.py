"""Worker of the split-decode tests: the built-in video model rendered through FramePipeline, each finished
block decoded by frames over the stages (``parallel.frames.decode``), optionally stopped at a tick and
continued from its checkpoint state on fresh pipelines (on a new group: the stopped stages' receives posted
ahead would take the new stages' messages)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from parallel.frames.decode import SplitDecoder
from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.builtin import resolve_model
from pipelines.families import family_of
from pipelines.families.wan.loading import load_video_pipeline
from runtime.jobs.video_state import export_stage_state, load_stage_state, merge_stage_states

SIZE = 32
CONFIG = dict(frames=12, block_frames=4, context_frames=1, steps=3, seed=0)


def split_render(rank: int, world: int, shares: list[int] | None, stop_tick: int | None = None) -> dict:
    """Stage ``rank`` of a render on ``world`` stages (1: no group, stage 0 decodes whole blocks); returns
    (stage 0) the decoded frames in the order they reached the writer, one array per block."""
    torch.manual_seed(0)
    pipe = load_video_pipeline(resolve_model("builtin-video"))
    group = dist.group.WORLD if world > 1 else None
    latent_shape = pipe.latent_shape(SIZE, SIZE)
    text = pipe.encode_prompt("red stripes")
    written: list[np.ndarray] = []

    def build(group: dist.ProcessGroup | None) -> FramePipeline:
        fp = FramePipeline(
            pipe.transformer,
            FramePipelineConfig(**CONFIG),
            latent_shape,
            text,
            pipe.make_scheduler,
            group=group,
            boundaries=[0, 3, 6] if world > 1 else None,
            decode_shares=shares,
            make_adapter=family_of(pipe).frame_adapter,
        )
        if world == 1:
            fp.on_block_done = lambda block, latent: written.append(pipe.decode_block(latent))
            return fp
        fp.split_decoder = SplitDecoder(
            group, fp.decode_shares, latent_shape, (SIZE, SIZE), fp.latent_dtype, fp.device, pipe.decode_block,
            written.append if rank == 0 else None,
        )
        if rank == 0:
            fp.on_block_done = fp.split_decoder.block_done
        return fp

    fp = build(group)
    if stop_tick is not None:
        fp.advance(stop_tick)
        state = export_stage_state(fp)
        fp.flush_decodes()
        states = [None] * world
        dist.all_gather_object(states, state)
        fp.close()
        fp = build(dist.new_group(list(range(world))))  # a resumed job gets a new group, as in the pool
        load_stage_state(fp, merge_stage_states(states))
    fp.advance()
    stats = fp.close()
    return {"written": written, "items": stats.items}
