"""Classifier-free guidance in the frame pipeline: both branches batched through the stages.

The S-stage parity with guidance is in test_frame_pipeline_parity (scenario "cfg"); here the guided
1-worker pipeline is checked against diffusers' own model called branch by branch, as WanPipeline does.
"""

from __future__ import annotations

import pytest
import torch
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan
from _video_workers import NEGATIVE_SEED, SCENARIOS, run_pipeline

from parallel.frames.noise import block_noise, noise_template
from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.wan.frames import WanFrameAdapter


@torch.no_grad()
def test_one_block_equals_diffusers_model_called_per_branch():
    """One block, no neighbours: the pipeline's guided steps are WanPipeline's CFG loop on that block."""
    torch.set_num_threads(1)
    g, steps, seed = 3.5, 3, 11
    model, text, negative = tiny_wan(layers=2), tiny_text(), tiny_text(NEGATIVE_SEED)
    outputs = {}
    config = FramePipelineConfig(
        frames=2, block_frames=2, context_frames=0, steps=steps, seed=seed, guidance_scale=g
    )
    FramePipeline(
        model,
        config,
        LATENT,
        text,
        make_scheduler,
        outputs.__setitem__,
        negative_text=negative,
        make_adapter=WanFrameAdapter,
    ).run()

    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    block_shape = (LATENT[0], 2, *LATENT[1:])
    latent = block_noise(noise_template(seed, block_shape), seed, 0)
    for t in scheduler.timesteps:
        cond = model(latent, t.reshape(1), text, return_dict=False)[0]
        uncond = model(latent, t.reshape(1), negative, return_dict=False)[0]
        latent = scheduler.step(uncond + g * (cond - uncond), t, latent, return_dict=False)[0]
    torch.testing.assert_close(outputs[0], latent, atol=1e-5, rtol=1e-5)


def test_guidance_changes_the_video():
    guided = run_pipeline(SCENARIOS["cfg"])["latents"]
    plain = run_pipeline(dict(SCENARIOS["cfg"], guidance_scale=1.0))["latents"]
    assert sorted(guided) == sorted(plain) == [0, 1, 2]
    assert not torch.allclose(guided[1], plain[1], atol=1e-3)


def test_guidance_without_negative_prompt_names_the_field():
    config = FramePipelineConfig(frames=2, block_frames=2, steps=1, guidance_scale=2.0)
    with pytest.raises(ValueError, match="negative_text: guidance_scale=2.0"):
        FramePipeline(tiny_wan(layers=1), config, LATENT, tiny_text(), make_scheduler, make_adapter=WanFrameAdapter)
    with pytest.raises(ValueError, match=r"negative_text: shape \(1, 3, 16\) differs"):
        FramePipeline(
            tiny_wan(layers=1),
            config,
            LATENT,
            tiny_text(),
            make_scheduler,
            negative_text=torch.zeros(1, 3, 16),
            make_adapter=WanFrameAdapter,
        )
