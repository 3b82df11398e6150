"""Worker of the causal-decode tests: a video render through ``VideoSession`` on every rank of a real gloo group,
a causal VAE's whole-block decode forced onto one stage (``decode_stage``), optionally stopped at a tick,
checkpointed (every stage's snapshot merged, through torch.save/load as the controller keeps it) and continued on
fresh sessions, maybe decoding on another stage. Stage 0 keeps the frames that reach its writer, one array per
block, and the finished latents."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.distributed as dist
from _video_workers import keep_latents


class FrameSink:
    """Stage 0's writer (append/close/abort/frames, as StreamingMP4Writer): keeps each block's frames."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.frames = 0

    def append(self, frames: np.ndarray) -> None:
        self.blocks.append(np.array(frames))
        self.frames += len(frames)

    def close(self) -> str:
        return "memory"

    def abort(self) -> None:
        """A pause abandons the stage: the blocks written so far stay (as a service job's block files do)."""


def _through_checkpoint(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def causal_renders(rank: int, world: int, model_dir: str, fields: dict, scenarios: dict) -> dict:
    """Each scenario ``name: (decode_stage, stop_tick or None, decode_stage after the resume)`` rendered in turn,
    each session on a group of its own; per scenario: stage 0's written blocks and finished latents, and this
    stage's reports (one per session)."""
    from cluster.jobs.video import VideoSpec
    from pipelines.families import family_for_dir
    from runtime.jobs.video_session import VideoSession
    from runtime.jobs.video_state import merge_stage_states

    spec = VideoSpec.from_dict({"model": model_dir, **fields})
    pipe = family_for_dir(model_dir).load(model_dir, spec.dtype, "cpu")
    out = {}
    for name, (decode_stage, stop_tick, resume_stage) in scenarios.items():
        sink = FrameSink()
        session = VideoSession(
            pipe, spec, dist.new_group(list(range(world))), make_writer=lambda sink=sink: sink, decode_stage=decode_stage
        )
        latents = keep_latents(session)
        reports = []
        if stop_tick is not None:
            assert session.advance(stop_tick) == stop_tick
            states = [None] * world
            dist.all_gather_object(states, session.snapshot())
            session.close()
            state = _through_checkpoint(merge_stage_states(states))
            # a resumed job gets a new group: the stopped stages' receives posted ahead would take its messages
            session = VideoSession(
                pipe, spec, dist.new_group(list(range(world))), make_writer=lambda sink=sink: sink, decode_stage=resume_stage
            )
            resumed = keep_latents(session)
            session.resume(state)
            reports.append({"decoder_state": state["decoder"] is not None, "tick": state["tick"]})
        session.advance()
        reports.append(session.finish())
        if stop_tick is not None:
            latents.update(resumed)
        out[name] = {
            "written": sink.blocks,
            "latents": latents,
            "reports": reports,
            "wire_dtype": str(session.pipeline.wire_dtype),
        }
    return out
