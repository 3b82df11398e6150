"""Wan 2.2 / image-to-video renders through the frame pipeline, on one worker or on every rank of a gloo group."""

from __future__ import annotations

import torch
import torch.distributed as dist

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families import family_of
from pipelines.families.wan.loading import load_video_pipeline

PROMPT, NEGATIVE = "red and yellow stripes", "blurry"
SIZE = 32
"""Pixels of the Wan 2.1-style tiny pipelines (4 x 4 latent pixels); TI2V takes 64 (its 16-pixel VAE)."""
I2V_STAGES = dict(frames=6, block_frames=2, context_frames=1, steps=3, seed=5, guidance_scale=3.0)
"""Three blocks of two latent frames: block 0 carries the image, blocks 1 and 2 the zero-mask conditioning."""


def run_wan(pipe, config: dict, image: str | None = None, group=None, size: int = SIZE) -> dict:
    """One render's finished latents (by block), sampler order and timesteps on this rank."""
    config = FramePipelineConfig(**config)
    text, negative, config.guidance_scale = pipe.conditioning(PROMPT, NEGATIVE, config.guidance_scale)
    if image is not None:
        text, negative = pipe.condition_on_image(text, negative, image, size, size, config.block_frames)
    outputs: dict[int, torch.Tensor] = {}
    frames = FramePipeline(
        pipe.transformer,
        config,
        pipe.latent_shape(size, size),
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


def i2v_stages(rank: int, world: int, model_dir: str, image: str) -> dict:
    return run_wan(load_video_pipeline(model_dir), I2V_STAGES, image, dist.group.WORLD)
