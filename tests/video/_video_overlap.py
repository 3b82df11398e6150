"""Functions the overlap tests run on each rank of a real 2-process gloo group (see _parallel_dist)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.wan.frames import WanFrameAdapter

ORDERED = dict(frames=8, block_frames=2, context_frames=1, steps=3, seed=2)
"""4 blocks x 3 steps: 12 items, more than a sender's in-flight limit (steps + 2), so some sends get waited."""
AHEAD = dict(frames=8, block_frames=2, context_frames=1, steps=1, seed=4)
"""4 blocks x 1 step: stage 0 needs nothing back before its last item, so it can run ahead freely."""
RUN_AHEAD_ITEMS = 3
"""Items stage 0 computes (and sends) while stage 1 has not posted a single receive: the sender's limit."""
BOUNDARIES = [0, 2, 4]
"""A fixed cut: no timing-based measurement, and no collective before the first message."""


def _pipeline(config: dict, group, outputs: dict) -> FramePipeline:
    return FramePipeline(
        tiny_wan(layers=4),
        FramePipelineConfig(**config),
        LATENT,
        tiny_text(),
        make_scheduler,
        on_block_done=lambda block, latent: outputs.__setitem__(block, latent.clone()),
        group=group,
        boundaries=BOUNDARIES if group is not None else None,
        trace=group is not None,
        make_adapter=WanFrameAdapter,
    )


def traced_run(rank: int, world: int) -> dict:
    """The whole ORDERED render with the event log on; returns this stage's events and schedule."""
    outputs: dict[int, torch.Tensor] = {}
    pipe = _pipeline(ORDERED, dist.group.WORLD, outputs)
    pipe.run()
    return {"events": pipe.trace.events, "items": pipe.items, "latents": outputs}


def delayed_receiver(rank: int, world: int, flag: str, patience_s: float = 90.0) -> dict:
    """Stage 1 posts no receive until stage 0 has computed and sent RUN_AHEAD_ITEMS items.

    Stage 0 can only get there if its sends do not wait for the receiver (a gloo send completes only
    once the peer's receive is posted). With synchronous sends stage 0 blocks in its first send and
    stage 1 gives up after ``patience_s`` seconds: a generous bound on 3 tiny forwards, which only a
    broken (synchronous) ring hits; the passing run never depends on timing.
    """
    outputs: dict[int, torch.Tensor] = {}
    pipe = _pipeline(AHEAD, dist.group.WORLD, outputs)
    flag_path = Path(flag)
    if rank == 0:
        pipe.advance(RUN_AHEAD_ITEMS)  # steps=1: one item per tick
        ahead = list(pipe.trace.events)
        flag_path.write_text("ahead")  # only now may stage 1 post its first receive
    else:
        deadline = time.monotonic() + patience_s
        while not flag_path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stage 0 did not compute {RUN_AHEAD_ITEMS} items in {patience_s}s while stage 1 held back "
                    "its receives: its sends wait for the receiver (synchronous ring)"
                )
            time.sleep(0.02)
        ahead = list(pipe.trace.events)  # nothing: stage 1 has not started
    pipe.run()
    return {"ahead": ahead, "events": pipe.trace.events, "latents": outputs}


def reference(config: dict) -> dict[int, torch.Tensor]:
    """The 1-worker run of the same schedule (same layers, no ring)."""
    torch.set_num_threads(1)
    outputs: dict[int, torch.Tensor] = {}
    _pipeline(config, None, outputs).run()
    return outputs
