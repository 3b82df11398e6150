"""The reference every family's parity test holds Tessera to: diffusers' own pipeline, called directly."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.loading import load_pipeline
from pipelines.samplers import make_scheduler


def diffusers_image(model_dir, spec, **call) -> np.ndarray:
    """The image the pipeline at ``model_dir`` renders for ``spec`` (same seed, sampler and size) when called
    directly; ``call`` adds or replaces arguments of the pipeline's ``__call__``."""
    return diffusers_output(model_dir, spec, **call).images[0]


def diffusers_output(model_dir, spec, dtype: str = "float32", device: str = "cpu", **call):
    """The pipeline's output for ``spec`` when called directly, loaded in ``dtype`` on ``device``
    (``output_type="latent"`` in ``call`` gives its final latents)."""
    pipe = load_pipeline(model_dir, dtype, device)
    pipe.scheduler = make_scheduler(spec.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    arguments = dict(
        negative_prompt=spec.negative_prompt or None,
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        generator=torch.Generator().manual_seed(spec.seed),
        output_type="np",
    )
    return pipe(spec.prompt, **{**arguments, **call})


def one_block_reference(model_dir, latent_frames: int, size: int, seed: int):
    """What a video family's one-block parity test calls diffusers with: the directory's diffusers pipeline (its
    ``model_index.json`` class, no progress bar), Tessera's loaded pipeline of it, and Tessera's initial latents
    [1, C, latent_frames, h, w] of a one-block video at ``size`` x ``size`` from ``seed``."""
    import diffusers

    from parallel.frames.noise import block_noise, noise_template
    from pipelines.families import family_for_dir

    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    channels, height, width = pipe.latent_shape(size, size)
    initial = block_noise(noise_template(seed, (channels, latent_frames, height, width)), seed, 0)
    reference = getattr(diffusers, pipe.pipeline_class).from_pretrained(
        model_dir, local_files_only=True, use_safetensors=True
    )
    reference.set_progress_bar_config(disable=True)
    return reference, pipe, initial
