"""LTX-Video renders through the frame pipeline, on one worker or on every rank of a real gloo group."""

from __future__ import annotations

import torch
import torch.distributed as dist

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families import family_of
from pipelines.families.ltx.loading import load_ltx_pipeline

PROMPT, NEGATIVE = "red circle on green", "blurry"
HEIGHT = WIDTH = 64
"""Pixels: 2 x 2 latent rows and columns at the VAE's 32."""
STAGE_SCENARIOS = {
    "plain": dict(frames=8, block_frames=2, context_frames=1, steps=3, seed=3),
    "cfg": dict(frames=6, block_frames=2, context_frames=1, steps=3, seed=5, guidance_scale=3.0),
}
"""Multi-block videos (latent frames) for the S-stage parity."""


def run_ltx(model_dir: str, config: dict, group=None, pipe=None) -> dict:
    """One render's finished latents (by block), sampler order and leaving order on this rank."""
    pipe = pipe or load_ltx_pipeline(model_dir)
    config = FramePipelineConfig(**config)
    text, negative, config.guidance_scale = pipe.conditioning(PROMPT, NEGATIVE, config.guidance_scale)
    outputs: dict[int, torch.Tensor] = {}
    frames = FramePipeline(
        pipe.transformer,
        config,
        pipe.latent_shape(HEIGHT, WIDTH),
        text,
        pipe.make_scheduler,
        on_block_done=lambda block, latent: outputs.__setitem__(block, latent.clone()),
        group=group,
        negative_text=negative,
        make_adapter=family_of(pipe).frame_adapter,
        set_timesteps=pipe.set_timesteps,
        step=pipe.scheduler_step,
    )
    frames.advance()
    stats = frames.close()
    return {
        "latents": outputs,
        "applied": frames.applied,
        "finished": frames.finished,
        "timesteps": frames.timesteps.cpu(),
        "layers": stats.layers,
    }


def ltx_stage_scenarios(rank: int, world: int, model_dir: str) -> dict:
    pipe = load_ltx_pipeline(model_dir)
    return {
        name: run_ltx(model_dir, config, dist.group.WORLD, pipe) for name, config in STAGE_SCENARIOS.items()
    }


def ltx_session(rank: int, world: int, model_dir: str, out_dir: str, fields: dict) -> dict:
    """A render of ``fields`` (a video spec) through VideoSession on this rank (``world`` 1: no group): the
    finished latents stage 0 saw and the stage's report."""
    from cluster.jobs.video import VideoSpec
    from runtime.jobs.video_session import VideoSession

    group = dist.group.WORLD if world > 1 else None
    spec = VideoSpec.from_dict({"model": model_dir, **fields})
    session = VideoSession(
        load_ltx_pipeline(model_dir), spec, group, video_path=f"{out_dir}/video-{world}.mp4"
    )
    latents: dict[int, torch.Tensor] = {}
    write = session.pipeline.on_block_done
    if write is not None:  # stage 0: keep a copy of each finished latent on its way to the MP4

        def keep(block: int, latent: torch.Tensor) -> None:
            latents[block] = latent.clone()
            write(block, latent)

        session.pipeline.on_block_done = keep
    session.advance()
    report = session.finish()
    processors = {type(b.attn2.processor).__name__ for b in session.pipe.transformer.transformer_blocks}
    return {
        "latents": latents,
        "report": report,
        "parallel": session.pipe.transformer._parallel_config,
        "processors": processors,
    }
