"""An LTX-Video directory whose VAE packs other than LTX-Video's 8 frames and 32 pixels per latent: the VAE diffusers'
own LTX tests build, whose encoder packs 4 and 4 (``LTXPipeline`` scales the transformer's rotary embedding by them)
and whose decoder makes 8 frames and 8 pixels of a latent. One block on one worker equals the pipeline called
directly, from the same initial latents, its latents and its decoded frames; a video of several blocks decodes to the
frames the whole decode has; 2 stages (blocks seeing their neighbours' frames through that embedding too) and Ulysses
on 2 workers equal one worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _band_checks import band_fields
from _ltx_workers import NEGATIVE, PROMPT, run_ltx
from _parallel_dist import run_ranks
from _tiny_ltx import save_tiny_ltx
from _video_workers import NpyFrames, render_session

from parallel.frames.noise import block_noise, noise_template
from pipelines.families.ltx.frames import rope_scale
from pipelines.families.ltx.loading import load_ltx_pipeline

SIZE = 64
"""16 x 16 latent pixels at 4 pixels per latent (``run_ltx`` renders 64 x 64)."""


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_ltx(tmp_path_factory.mktemp("ltx-small") / "tiny-ltx", small_vae=True))


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@torch.no_grad()
def test_one_block_equals_ltx_pipeline(ltx_dir, guidance_scale):
    from diffusers import LTXPipeline

    torch.set_num_threads(1)
    pipe = load_ltx_pipeline(ltx_dir)
    assert (pipe.pipe.vae_temporal_compression_ratio, pipe.pipe.vae_spatial_compression_ratio) == (4, 4)
    assert rope_scale(pipe.transformer) == (4 / 25, 4, 4)
    config = dict(frames=3, block_frames=3, context_frames=1, steps=3, seed=7, guidance_scale=guidance_scale)
    got = run_ltx(ltx_dir, config, pipe=pipe)
    block_shape = (pipe.transformer.config.in_channels, 3, *pipe.latent_shape(SIZE, SIZE)[1:])
    assert block_shape[2:] == (16, 16)
    initial = block_noise(noise_template(7, block_shape), 7, 0)
    reference = LTXPipeline.from_pretrained(ltx_dir, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    packed = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=9, num_inference_steps=3,
        guidance_scale=guidance_scale, latents=reference._pack_latents(initial), output_type="latent",
        return_dict=False,
    )[0]
    expected = reference._unpack_latents(packed, 3, 16, 16)
    diff = (got["latents"][0] - expected).abs().max().item()
    print(f"LTX (VAE of 4 frames, 4 pixels) 1 block vs LTXPipeline, g={guidance_scale}: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy,degree", [("frames", 2), ("sequence", 2)])
def test_two_workers_equal_one(ltx_dir, tmp_path, strategy, degree):
    video = dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=3.0, height=32, width=32, steps=2,
                 seed=3, frames=24, block_frames=8 if strategy == "frames" else 24,
                 context_frames=4 if strategy == "frames" else 0)
    reference = render_session(0, 1, ltx_dir, str(tmp_path), band_fields(video, "none", 1))
    got = run_ranks(render_session, degree, ltx_dir, str(tmp_path), band_fields(video, strategy, degree), timeout=240)[0]
    assert sorted(got["latents"]) == sorted(reference["latents"])
    for block, latent in reference["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_decoded_frames_are_the_pipelines(ltx_dir, tmp_path):
    from diffusers import LTXPipeline

    torch.set_num_threads(1)
    fields = dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=1.0, height=32, width=32, steps=2, seed=3,
                  frames=12, block_frames=12, context_frames=0, dtype="float32")
    sink = NpyFrames(str(tmp_path / "one.npy"))
    render_session(0, 1, ltx_dir, str(tmp_path), fields, make_writer=lambda: sink)
    got = np.concatenate(sink.blocks)
    pipe = load_ltx_pipeline(ltx_dir)
    initial = block_noise(noise_template(3, (pipe.transformer.config.in_channels, 3, 8, 8)), 3, 0)
    reference = LTXPipeline.from_pretrained(ltx_dir, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    video = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_frames=9, num_inference_steps=2,
        guidance_scale=1.0, latents=reference._pack_latents(initial), output_type="np", return_dict=False,
    )[0][0]
    expected = np.round(video * 255).astype(np.int16)
    assert got.shape == expected.shape == (17, 64, 64, 3)  # the decoder's 8 frames and 8 pixels per latent
    assert np.abs(got.astype(np.int16) - expected).max() <= 1
    several = NpyFrames(str(tmp_path / "blocks.npy"))  # 3 blocks: the first held back for its right context
    render_session(0, 1, ltx_dir, str(tmp_path), dict(fields, frames=36, block_frames=12, context_frames=4),
                   make_writer=lambda: several)
    assert np.concatenate(several.blocks).shape == (1 + 8 * 8, 64, 64, 3)
