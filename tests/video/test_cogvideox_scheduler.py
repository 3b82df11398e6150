"""A CogVideoX directory with a scheduler other than the CogVideoX ones (the plain ``DDIMScheduler`` of diffusers' own
CogVideoX tests): accepted, and one block on one worker equals ``CogVideoXPipeline`` called directly, which steps any
scheduler with the arguments its ``step`` takes."""

from __future__ import annotations

import pytest
import torch
from _tiny_cogvideox import TEXT_TOKENS, Z_DIM, save_tiny_cogvideox
from _video_workers import render_session

from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template

SIZE = 32
TASK = dict(dtype="float32", prompt="red and yellow stripes", negative_prompt="blurry", height=SIZE, width=SIZE,
            steps=3, seed=4, fps=8.0, frames=16, block_frames=16, context_frames=0)


@pytest.fixture(scope="module")
def plain_ddim(tmp_path_factory):
    return str(save_tiny_cogvideox(tmp_path_factory.mktemp("cogvideox-plain") / "cogvideox", "1.0", "plain-ddim"))


@pytest.mark.parametrize("guidance", [1.0, 5.0])
@torch.no_grad()
def test_one_block_equals_the_pipeline(plain_ddim, tmp_path, guidance):
    from diffusers import CogVideoXPipeline, DDIMScheduler

    torch.set_num_threads(1)
    spec = VideoSpec.from_dict(dict(TASK, model=plain_ddim, guidance_scale=guidance,
                                    parallel={"strategy": "none", "degree": 1}))
    assert spec.model_family().name == "cogvideox"
    got = render_session(0, 1, plain_ddim, str(tmp_path), dict(TASK, guidance_scale=guidance))["latents"][0]
    initial = block_noise(noise_template(4, (Z_DIM, 4, SIZE // 4, SIZE // 4)), 4, 0)
    reference = CogVideoXPipeline.from_pretrained(plain_ddim, local_files_only=True, use_safetensors=True)
    assert type(reference.scheduler) is DDIMScheduler
    reference.set_progress_bar_config(disable=True)
    expected = reference(
        prompt=TASK["prompt"], negative_prompt=TASK["negative_prompt"], height=SIZE, width=SIZE, num_frames=13,
        num_inference_steps=3, guidance_scale=guidance, latents=initial.transpose(1, 2), output_type="latent",
        max_sequence_length=TEXT_TOKENS,  # 1.0's sincos table is built for the fixture's text tokens
    ).frames.transpose(1, 2)
    diff = (got - expected).abs().max().item()
    print(f"cogvideox with DDIMScheduler, guidance {guidance}: max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
