"""An SDXL job whose late steps run on an SDXL refiner (a segment on StableDiffusionXLImg2ImgPipeline sharing
the base's VAE) equals diffusers' own ensemble of expert denoisers: the base with ``denoising_end`` and the
refiner with ``denoising_start`` on its latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_sdxl import save_tiny_sdxl

from cluster.jobs.image import RenderSpec
from pipelines.loading import load_pipeline
from pipelines.sampling import decode_latents
from runtime.jobs.image_session import RenderSession

STEPS = 5
HIGH_NOISE = 0.6
"""The share of the noise schedule the base model denoises (diffusers' denoising_end)."""


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl-refiner")
    return save_tiny_sdxl(root / "base"), save_tiny_sdxl(root / "refiner", refiner=True)


def _base_steps(base_dir) -> int:
    """How many of the job's steps diffusers gives the base for HIGH_NOISE (its cut of the timesteps)."""
    pipe = load_pipeline(base_dir)
    pipe.scheduler.set_timesteps(STEPS)
    cutoff = round(pipe.scheduler.config.num_train_timesteps * (1 - HIGH_NOISE))
    return int((pipe.scheduler.timesteps >= cutoff).sum())


def _spec(base_dir, refiner_dir, first: int) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(base_dir),
            "prompt": "red and blue stripes",
            "negative_prompt": "blurry",
            "height": 64,
            "width": 64,
            "steps": STEPS,
            "seed": 7,
            "guidance_scale": 4.0,
            "sampler": "euler",
            "segments": [{"steps": first}, {"steps": STEPS - first, "model": str(refiner_dir)}],
        }
    )


@torch.no_grad()
def _diffusers_ensemble(base_dir, refiner_dir, spec: RenderSpec) -> np.ndarray:
    base, refiner = load_pipeline(base_dir), load_pipeline(refiner_dir)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    common = dict(prompt=spec.prompt, negative_prompt=spec.negative_prompt, num_inference_steps=STEPS)
    latents = base(
        **common,
        height=spec.height,
        width=spec.width,
        guidance_scale=spec.guidance_scale,
        denoising_end=HIGH_NOISE,
        generator=torch.Generator().manual_seed(spec.seed),
        output_type="latent",
    ).images
    refined = refiner(
        **common, image=latents, guidance_scale=spec.guidance_scale, denoising_start=HIGH_NOISE, output_type="np"
    )
    return refined.images[0]


@torch.no_grad()
def test_base_then_refiner_segments_equal_diffusers_ensemble(pipelines):
    base_dir, refiner_dir = pipelines
    first = _base_steps(base_dir)
    assert 0 < first < STEPS
    spec = _spec(base_dir, refiner_dir, first)
    base = RenderSession(load_pipeline(base_dir), spec.placed(str(base_dir), 1))
    base.advance(first)
    refiner_pipe = load_pipeline(refiner_dir)
    refined = RenderSession(refiner_pipe, spec.placed(str(refiner_dir), 1), resume=base.snapshot())
    assert refined.advance(STEPS - first) == STEPS
    image = decode_latents(refiner_pipe, refined.latents())
    expected = _diffusers_ensemble(base_dir, refiner_dir, spec)
    torch.testing.assert_close(torch.tensor(image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_the_refiner_shares_the_base_latent_space(pipelines):
    base_dir, refiner_dir = pipelines
    spec = _spec(base_dir, refiner_dir, 2)
    assert spec.model_family(str(refiner_dir)).name == "sdxl"
    assert spec.model_family(str(refiner_dir)).cost_model(refiner_dir, "float32").extra["time_ids"] == 5
