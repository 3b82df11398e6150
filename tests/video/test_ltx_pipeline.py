"""LTX-Video through the frame pipeline against diffusers' LTXPipeline called directly (a tiny directory built
offline): one block on one worker is the pipeline's render from the same initial latents, with and without
classifier-free guidance; a block's decode is the pipeline's decode; S = 2 and 3 stages over real gloo
processes equal the 1-worker block-wise schedule."""

from __future__ import annotations

import math

import pytest
import torch
from _ltx_workers import HEIGHT, NEGATIVE, PROMPT, STAGE_SCENARIOS, WIDTH, ltx_stage_scenarios, run_ltx
from _parallel_dist import run_ranks
from _tiny_ltx import save_tiny_ltx

from parallel.frames.noise import block_noise, noise_template
from pipelines.families.ltx.decode import LTXBlockDecoder
from pipelines.families.ltx.loading import load_ltx_pipeline


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


@pytest.fixture(scope="module")
def pipe(ltx_dir):
    return load_ltx_pipeline(ltx_dir)


@pytest.fixture(scope="module")
def diffusers_pipe(ltx_dir):
    from diffusers import LTXPipeline

    reference = LTXPipeline.from_pretrained(ltx_dir, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    return reference


def _diffusers_call(reference, latents: torch.Tensor, steps: int, guidance_scale: float, **kwargs):
    """LTXPipeline.__call__ from unpacked initial latents [1, C, F, h, w], at the pixel size and 8k+1 frame
    count that give them; its own shapes and packing."""
    _, _, frames, height, width = latents.shape
    spatial, temporal = reference.vae_spatial_compression_ratio, reference.vae_temporal_compression_ratio
    return reference(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=height * spatial,
        width=width * spatial,
        num_frames=temporal * (frames - 1) + 1,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        latents=reference._pack_latents(latents),
        return_dict=False,
        **kwargs,
    )[0]


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@torch.no_grad()
def test_one_block_equals_ltx_pipeline(pipe, diffusers_pipe, guidance_scale):
    torch.set_num_threads(1)
    config = dict(frames=3, block_frames=3, context_frames=1, steps=4, seed=11, guidance_scale=guidance_scale)
    got = run_ltx("", config, pipe=pipe)
    block_shape = (pipe.transformer.config.in_channels, 3, *pipe.latent_shape(HEIGHT, WIDTH)[1:])
    initial = block_noise(noise_template(11, block_shape), 11, 0)
    packed = _diffusers_call(diffusers_pipe, initial, 4, guidance_scale, output_type="latent")
    expected = diffusers_pipe._unpack_latents(packed, 3, *block_shape[2:])
    assert got["finished"] == [0]
    torch.testing.assert_close(got["timesteps"], diffusers_pipe.scheduler.timesteps.cpu())  # mu, sigmas
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)
    print(
        f"LTX 1 block vs LTXPipeline, g={guidance_scale}: max abs diff {(got['latents'][0] - expected).abs().max():.2e}"
    )


@torch.no_grad()
def test_block_decode_is_the_pipelines_decode(pipe, diffusers_pipe):
    """The pipeline's output video from the same latents: normalisation undone, the VAE's decode timestep."""
    torch.set_num_threads(1)
    latents = torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(4))
    video = _diffusers_call(
        diffusers_pipe, latents, 2, 1.0, output_type="pt", decode_timestep=0.05, decode_noise_scale=0.0
    )  # [1, F, 3, H, W] in [0, 1]
    final = diffusers_pipe._unpack_latents(
        _diffusers_call(diffusers_pipe, latents, 2, 1.0, output_type="latent"), 2, 2, 2
    )
    got = pipe.block_decoder(decode_timestep=0.05, decode_noise_scale=0.0).decode(final)  # [1, 3, F, H, W], [-1, 1]
    assert got.shape[2] == video.shape[1] == pipe.video_frames(2) == 9
    torch.testing.assert_close(
        (got / 2 + 0.5).clamp(0, 1), video.permute(0, 2, 1, 3, 4), atol=1e-5, rtol=1e-5
    )
    # without the decode timestep the frames differ: the check can tell
    assert not torch.allclose(pipe.block_decoder().decode(final), got, atol=1e-3)


@torch.no_grad()
def test_blockwise_decode_keeps_the_frames_and_reports_the_seam(pipe):
    """LTX's VAE has no cache across calls: a decoder not told the video's length holds nothing back, so each block
    decodes with the frames before it only, which keeps the whole decode's frames but not its values (the seam, as
    PSNR against the whole decode; with frames after each block: test_ltx_decode_context.py)."""
    from diffusers import LTXPipeline

    torch.set_num_threads(1)
    vae = pipe.vae
    latent = torch.randn(1, 8, 12, 2, 2, generator=torch.Generator().manual_seed(0))
    z = LTXPipeline._denormalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    whole = vae.decode(z, torch.tensor([0.0]), return_dict=False)[0].clamp(-1, 1)
    alone = LTXBlockDecoder(vae).decode(latent[:, :, 6:])  # the second block as if it began the video
    assert alone.shape[2] == pipe.video_frames(6)
    for block in (6, 4):
        decoder = pipe.block_decoder()
        parts = [decoder.decode(latent[:, :, i : i + block]) for i in range(0, 12, block)]
        video = torch.cat(parts, dim=2)
        assert [p.shape[2] for p in parts] == [pipe.video_frames(block)] + [8 * block] * (12 // block - 1)
        assert video.shape == whole.shape
        psnr = 10 * math.log10(4 / (video - whole).pow(2).mean().item())
        print(f"LTX block-wise decode vs whole, blocks of {block} latent frames: PSNR {psnr:.1f} dB")
        assert psnr > 15.0


def test_stages_equal_one_worker(ltx_dir):
    torch.set_num_threads(1)
    pipe = load_ltx_pipeline(ltx_dir)
    refs = {name: run_ltx("", config, pipe=pipe) for name, config in STAGE_SCENARIOS.items()}
    alone = run_ltx("", dict(STAGE_SCENARIOS["plain"], context_frames=0), pipe=pipe)["latents"]
    assert not torch.allclose(alone[1], refs["plain"]["latents"][1], atol=1e-3)  # blocks see their neighbours
    for world in (2, 3):
        ranks = run_ranks(ltx_stage_scenarios, world, str(ltx_dir), timeout=180)
        layers = [r["plain"]["layers"] for r in ranks]  # contiguous shares of the 4 transformer blocks
        assert layers[0][0] == 0 and layers[-1][1] == 4
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(layers, layers[1:]))
        for name, ref in refs.items():
            got = ranks[0][name]
            assert sorted(got["latents"]) == sorted(ref["latents"]) == list(range(len(ref["latents"])))
            assert len(ref["latents"]) >= world  # every stage busy with a different block at once
            diff = max((got["latents"][b] - ref["latents"][b]).abs().max().item() for b in ref["latents"])
            for block, latent in ref["latents"].items():
                torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
            assert got["applied"] == ref["applied"] and got["finished"] == ref["finished"]
            assert not any(r[name]["latents"] for r in ranks[1:])
            print(f"LTX {world} stages vs 1 worker, {name}: max abs diff {diff:.2e}")
