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
