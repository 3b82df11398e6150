"""One block on one worker in bfloat16 (through ``VideoSession``, as a worker renders) against the family's diffusers
pipeline loaded in bfloat16, from the same initial latents: bit for bit. Under a half-precision model each pipeline
keeps its own dtypes, and a family must follow them (``latent_dtype``, the adapters' ``output_dtype``):

- Wan, HunyuanVideo, LTX-Video prepare their latents in float32; LTX-Video and CogVideoX upcast the noise prediction
  to float32 before guidance and the step (before the families said so: LTX's latents stepped in bfloat16, max abs
  diff 0.016-0.026 after 4 steps; CogVideoX's guidance was combined in bfloat16, 0.039-0.051);
- HunyuanVideo passes its timestep in the latents' dtype (``t.to(latents.dtype)``: bfloat16 after the first step;
  before, float32: 0.0625 after 3 steps);
- LTX-Video under guidance feeds ``proj_in`` a contiguous batch (its ``torch.cat`` of packed latents): CPU bfloat16
  GEMMs round by memory layout (0.0227 after 4 steps before).

Wan (2.1 and 2.2's two experts) matched already. Bit for bit holds because both sides run the same kernels on the
same inputs; a difference here means a family's call path left diffusers'."""

from __future__ import annotations

import pytest
import torch
from _hunyuan_workers import PROMPT as HUNYUAN_PROMPT
from _ltx_workers import HEIGHT, NEGATIVE, PROMPT
from _tiny_cogvideox import TEXT_TOKENS as COG_TOKENS
from _tiny_cogvideox import Z_DIM, save_tiny_cogvideox
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo
from _tiny_hunyuanvideo import TEXT_TOKENS as HUNYUAN_TOKENS
from _tiny_ltx import TEXT_TOKENS as LTX_TOKENS
from _tiny_ltx import save_tiny_ltx
from _tiny_wan22 import save_tiny_wan_two_experts
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from parallel.frames.noise import block_noise, block_step_seed, noise_template
from pipelines.families import family_for_dir

COMMON = dict(dtype="bfloat16", context_frames=0, fps=8.0)


def _render(tmp_path, model_dir: str, **fields) -> torch.Tensor:
    torch.set_num_threads(1)
    return render_session(0, 1, model_dir, str(tmp_path), dict(COMMON, **fields))["latents"][0]


def _close(name: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    diff = (got.float() - expected.float()).abs().max().item()
    print(f"{name} bf16, one block vs the diffusers pipeline: max abs diff {diff:.3g} ({got.dtype}, {expected.dtype})")
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected), f"{name}: max abs diff {diff:.3g}"


@torch.no_grad()
def test_hunyuanvideo(tmp_path):
    from diffusers import HunyuanVideoPipeline

    model_dir = str(save_tiny_hunyuanvideo(tmp_path / "hunyuan"))
    got = _render(tmp_path, model_dir, prompt=HUNYUAN_PROMPT, height=32, width=32, frames=12, block_frames=12,
                  guidance_scale=6.0, steps=3, seed=2)
    latents = block_noise(noise_template(2, (LATENT_CHANNELS, 3, 4, 4)), 2, 0)
    pipe = HunyuanVideoPipeline.from_pretrained(model_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=HUNYUAN_PROMPT, height=32, width=32, num_frames=9, num_inference_steps=3, guidance_scale=6.0,
        latents=latents.clone(), output_type="latent", max_sequence_length=HUNYUAN_TOKENS,
    ).frames
    _close("HunyuanVideo", got, expected)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@torch.no_grad()
def test_ltx(tmp_path, guidance_scale):
    from diffusers import LTXPipeline

    model_dir = str(save_tiny_ltx(tmp_path / "ltx"))
    got = _render(tmp_path, model_dir, prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=HEIGHT,
                  frames=24, block_frames=24, guidance_scale=guidance_scale, steps=4, seed=11)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    shape = (pipe.transformer.config.in_channels, 3, *pipe.latent_shape(HEIGHT, HEIGHT)[1:])
    reference = LTXPipeline.from_pretrained(model_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    reference.set_progress_bar_config(disable=True)
    packed = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=HEIGHT, num_frames=17, num_inference_steps=4,
        guidance_scale=guidance_scale, latents=reference._pack_latents(block_noise(noise_template(11, shape), 11, 0)),
        max_sequence_length=LTX_TOKENS, output_type="latent", return_dict=False,
    )[0]
    _close(f"LTX g={guidance_scale}", got, reference._unpack_latents(packed, 3, *shape[2:]))


@pytest.mark.parametrize("version,scheduler", [("1.0", "ddim"), ("1.5", "dpm")])
@torch.no_grad()
def test_cogvideox(tmp_path, version, scheduler):
    from diffusers import CogVideoXPipeline

    model_dir = str(save_tiny_cogvideox(tmp_path / "cog", version, scheduler))
    fields = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=32, width=32, steps=3, seed=4)
    got = _render(tmp_path, model_dir, frames=16, block_frames=16, guidance_scale=4.0, **fields)
    initial = block_noise(noise_template(4, (Z_DIM, 4, 8, 8)), 4, 0)
    reference = CogVideoXPipeline.from_pretrained(model_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    expected = reference(
        prompt=fields["prompt"], negative_prompt=fields["negative_prompt"], height=32, width=32, num_frames=13,
        num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(block_step_seed(4, 0)),
        latents=initial.transpose(1, 2).to(torch.bfloat16), output_type="latent",
        **({"max_sequence_length": COG_TOKENS} if version == "1.0" else {}),
    ).frames
    _close(f"CogVideoX {version}", got, expected.transpose(1, 2))


@pytest.mark.parametrize("layout", ["wan2.1", "wan2.2-a14b"])
@torch.no_grad()
def test_wan(tmp_path, layout):
    from diffusers import WanPipeline

    save = save_tiny_wan_pipeline if layout == "wan2.1" else save_tiny_wan_two_experts
    model_dir = str(save(tmp_path / layout))
    fields = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=32, width=32, steps=4, seed=11)
    got = _render(tmp_path, model_dir, frames=8, block_frames=8, guidance_scale=3.0, **fields)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    channels, height, width = pipe.latent_shape(32, 32)
    initial = block_noise(noise_template(11, (channels, 2, height, width)), 11, 0)
    reference = WanPipeline.from_pretrained(model_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    reference.set_progress_bar_config(disable=True)
    expected = reference(
        prompt=fields["prompt"], negative_prompt=fields["negative_prompt"], height=32, width=32,
        num_frames=pipe.video_frames(2), num_inference_steps=4, guidance_scale=3.0, latents=initial,
        max_sequence_length=int(pipe.tokenizer.model_max_length), output_type="latent", return_dict=False,
    )[0]
    _close(f"Wan {layout}", got, expected)
