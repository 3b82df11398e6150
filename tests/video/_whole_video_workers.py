"""A whole-video render stopped after some ticks and continued from its checkpoint state in a fresh session, on
every rank of a real gloo group (see _parallel_dist)."""

from __future__ import annotations

import torch.distributed as dist
from _video_workers import keep_latents

from pipelines.families import family_for_dir
from runtime.jobs.video_session import VideoSession
from runtime.jobs.video_state import merge_stage_states


def resumed_session(rank: int, world: int, model_dir: str, out_dir: str, fields: dict, stop_at: int) -> dict:
    """The finished latent of a render of ``fields`` stopped at tick ``stop_at`` (its state taken as the service
    takes it, the session abandoned) and continued in a new session; with the new session's report."""
    from cluster.jobs.video import VideoSpec

    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    spec = VideoSpec(model=model_dir, **fields)
    first = VideoSession(pipe, spec, dist.group.WORLD, video_path=f"{out_dir}/first-{rank}.mp4")
    assert first.advance(stop_at) == stop_at
    state = merge_stage_states([first.snapshot()])  # every worker holds the whole latent
    first.close()
    second = VideoSession(pipe, spec, dist.group.WORLD, video_path=f"{out_dir}/video.mp4")
    second.resume(state)
    latents = keep_latents(second)
    second.advance()
    return {"latents": latents, "report": second.finish()}
