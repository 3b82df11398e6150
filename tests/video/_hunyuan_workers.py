"""A HunyuanVideo render through FramePipeline on one rank of a real gloo group (or alone), for the parity tests."""

from __future__ import annotations

import torch
import torch.distributed as dist

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.hunyuanvideo import HUNYUANVIDEO

PROMPT = "red and blue stripes"


def frame_render(
    rank: int, world: int, model_dir: str, config: dict, guidance_scale: float, negative_prompt: str = "",
    true_cfg_scale: float = 1.0,
) -> dict:
    """The finished latents (stage 0), the sampler's order and the stage's layers of one render (under true CFG with
    ``true_cfg_scale`` above 1 and a ``negative_prompt``); ``world`` 1 runs without a group."""
    torch.set_num_threads(1)
    parts = HUNYUANVIDEO.load(model_dir, "float32", "cpu")
    text, negative, cfg = parts.conditioning(PROMPT, negative_prompt, guidance_scale, true_cfg_scale)
    outputs: dict[int, torch.Tensor] = {}
    pipe = FramePipeline(
        parts.transformer,
        FramePipelineConfig(**config, guidance_scale=cfg),
        parts.latent_shape(32, 32),
        text,
        parts.make_scheduler,
        on_block_done=lambda block, latent: outputs.__setitem__(block, latent.clone()),
        group=dist.group.WORLD if world > 1 else None,
        negative_text=negative,
        make_adapter=HUNYUANVIDEO.frame_adapter,
        set_timesteps=parts.set_timesteps,
        step=parts.scheduler_step,
    )
    pipe.advance()
    stats = pipe.close()
    return {"latents": outputs, "applied": pipe.applied, "layers": stats.layers, "timesteps": pipe.timesteps}
