"""One block of each video family in bfloat16 on one device: Tessera's latents (``VideoSession``, as a worker renders)
and those of the family's diffusers pipeline, loaded in bfloat16 and called directly with the same initial latents.

``test_bfloat16_parity.py`` holds each pair equal on CPU; ``bench.cuda_families`` compares them on a GPU. A case is
``case(out_dir, device, make_writer=None) -> (tessera, diffusers)``, both final latents in the pipeline's own layout;
``make_writer``: stage 0's sink for the decoded frames instead of an MP4 (a machine without ffmpeg)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from _hunyuan_workers import PROMPT as HUNYUAN_PROMPT
from _ltx_workers import HEIGHT, NEGATIVE, PROMPT
from _tiny_cogvideox import TEXT_TOKENS as COG_TOKENS
from _tiny_cogvideox import Z_DIM, save_tiny_cogvideox
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan22 import save_test_image, save_tiny_wan_i2v, save_tiny_wan_two_experts
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from parallel.frames.noise import block_noise, block_step_seed, noise_template
from pipelines.families import family_for_dir

COMMON = dict(dtype="bfloat16", context_frames=0, fps=8.0)
Pair = tuple[torch.Tensor, torch.Tensor]


def _render(out_dir: Path, model_dir: str, device: str, make_writer, **fields) -> torch.Tensor:
    torch.set_num_threads(1)
    task = dict(COMMON, **fields)
    return render_session(0, 1, model_dir, str(out_dir), task, device, make_writer)["latents"][0]


def _reference(pipeline_class, model_dir: str, device: str):
    reference = pipeline_class.from_pretrained(model_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    reference.set_progress_bar_config(disable=True)
    return reference.to(device)


@torch.no_grad()
def hunyuanvideo(out_dir: Path, device: str = "cpu", make_writer=None, true_cfg_scale: float = 1.0) -> Pair:
    from diffusers import HunyuanVideoPipeline

    negative = "blurry" if true_cfg_scale > 1.0 else ""  # the pipeline's true CFG: both branches, embedded guidance
    model_dir = str(save_tiny_hunyuanvideo(out_dir / "hunyuan"))
    got = _render(out_dir, model_dir, device, make_writer, prompt=HUNYUAN_PROMPT, height=32, width=32, frames=12,
                  block_frames=12, guidance_scale=6.0, steps=3, seed=2, negative_prompt=negative,
                  true_cfg_scale=true_cfg_scale)
    latents = block_noise(noise_template(2, (LATENT_CHANNELS, 3, 4, 4)), 2, 0)
    expected = _reference(HunyuanVideoPipeline, model_dir, device)(
        prompt=HUNYUAN_PROMPT, height=32, width=32, num_frames=9, num_inference_steps=3, guidance_scale=6.0,
        latents=latents.to(device), output_type="latent", negative_prompt=negative or None, true_cfg_scale=true_cfg_scale,
    ).frames
    return got, expected


@torch.no_grad()
def ltx(out_dir: Path, device: str = "cpu", make_writer=None, guidance_scale: float = 1.0) -> Pair:
    from diffusers import LTXPipeline

    model_dir = str(save_tiny_ltx(out_dir / "ltx"))
    got = _render(out_dir, model_dir, device, make_writer, prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT,
                  width=HEIGHT, frames=24, block_frames=24, guidance_scale=guidance_scale, steps=4, seed=11)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    shape = (pipe.transformer.config.in_channels, 3, *pipe.latent_shape(HEIGHT, HEIGHT)[1:])
    reference = _reference(LTXPipeline, model_dir, device)
    initial = block_noise(noise_template(11, shape), 11, 0).to(device)
    packed = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=HEIGHT, num_frames=17, num_inference_steps=4,
        guidance_scale=guidance_scale, latents=reference._pack_latents(initial),
        output_type="latent", return_dict=False,
    )[0]
    return got, reference._unpack_latents(packed, 3, *shape[2:])


@torch.no_grad()
def cogvideox(
    out_dir: Path, device: str = "cpu", make_writer=None, version: str = "1.0", scheduler: str = "ddim",
    use_dynamic_cfg: bool = False,
) -> Pair:
    from diffusers import CogVideoXPipeline

    model_dir = str(save_tiny_cogvideox(out_dir / "cog", version, scheduler))
    fields = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=32, width=32, steps=3, seed=4)
    got = _render(out_dir, model_dir, device, make_writer, frames=16, block_frames=16, guidance_scale=4.0,
                  use_dynamic_cfg=use_dynamic_cfg, **fields)
    initial = block_noise(noise_template(4, (Z_DIM, 4, 8, 8)), 4, 0)
    expected = _reference(CogVideoXPipeline, model_dir, device)(
        prompt=fields["prompt"], negative_prompt=fields["negative_prompt"], height=32, width=32, num_frames=13,
        num_inference_steps=3, guidance_scale=4.0, use_dynamic_cfg=use_dynamic_cfg,
        generator=torch.Generator().manual_seed(block_step_seed(4, 0)),
        latents=initial.transpose(1, 2).to(device, torch.bfloat16), output_type="latent",
        **({"max_sequence_length": COG_TOKENS} if version == "1.0" else {}),
    ).frames
    return got, expected.transpose(1, 2)


@torch.no_grad()
def wan(
    out_dir: Path, device: str = "cpu", make_writer=None, layout: str = "wan2.1", guidance_scale_2: float | None = None
) -> Pair:
    from diffusers import WanPipeline

    save = save_tiny_wan_pipeline if layout == "wan2.1" else save_tiny_wan_two_experts
    model_dir = str(save(out_dir / layout))
    fields = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=32, width=32, steps=4, seed=11)
    got = _render(out_dir, model_dir, device, make_writer, frames=8, block_frames=8, guidance_scale=3.0,
                  guidance_scale_2=guidance_scale_2, **fields)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    channels, height, width = pipe.latent_shape(32, 32)
    initial = block_noise(noise_template(11, (channels, 2, height, width)), 11, 0)
    expected = _reference(WanPipeline, model_dir, device)(
        prompt=fields["prompt"], negative_prompt=fields["negative_prompt"], height=32, width=32,
        num_frames=pipe.video_frames(2), num_inference_steps=4, guidance_scale=3.0, guidance_scale_2=guidance_scale_2,
        latents=initial.to(device), output_type="latent", return_dict=False,
    )[0]
    return got, expected


@torch.no_grad()
def wan_i2v(out_dir: Path, device: str = "cpu", make_writer=None) -> Pair:
    """Wan 2.1 image-to-video (CLIP image tokens beside the text in every cross-attention) under guidance: diffusers
    calls the model once per branch, the frame pipeline batches them (``PerBranchCrossAttnProcessor``)."""
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    model_dir, image = str(save_tiny_wan_i2v(out_dir / "i2v21")), save_test_image(out_dir / "first.png")
    fields = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=32, width=32, steps=3, seed=11)
    got = _render(out_dir, model_dir, device, make_writer, frames=8, block_frames=8, guidance_scale=3.0,
                  image=str(image), **fields)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    channels, height, width = pipe.latent_shape(32, 32)
    initial = block_noise(noise_template(11, (channels, 2, height, width)), 11, 0)
    expected = _reference(WanImageToVideoPipeline, model_dir, device)(
        image=Image.open(image).convert("RGB"), prompt=fields["prompt"], negative_prompt=fields["negative_prompt"],
        height=32, width=32, num_frames=pipe.video_frames(2), num_inference_steps=3, guidance_scale=3.0,
        latents=initial.to(device), output_type="latent", return_dict=False,
    )[0]
    return got, expected


CASES = {
    "HunyuanVideo": hunyuanvideo,
    "HunyuanVideo true CFG": partial(hunyuanvideo, true_cfg_scale=3.0),
    "LTX g=1.0": partial(ltx, guidance_scale=1.0),
    "LTX g=3.0": partial(ltx, guidance_scale=3.0),
    "CogVideoX 1.0": partial(cogvideox, version="1.0", scheduler="ddim"),
    "CogVideoX 1.5": partial(cogvideox, version="1.5", scheduler="dpm"),
    "CogVideoX 1.5 dynamic CFG": partial(cogvideox, version="1.5", scheduler="dpm", use_dynamic_cfg=True),
    "Wan wan2.1": partial(wan, layout="wan2.1"),
    "Wan wan2.2-a14b": partial(wan, layout="wan2.2-a14b"),
    "Wan wan2.2-a14b guidance_scale_2": partial(wan, layout="wan2.2-a14b", guidance_scale_2=1.5),
    "Wan wan2.1-i2v": wan_i2v,
}
"""Every case by the name the parity test prints."""
