"""Decode a Qwen-Image latent as QwenImagePipeline does: per-channel normalisation undone, then the causal 3-D VAE
(``AutoencoderKLQwenImage``) on a video of one frame, whose frame is the image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipelines.sampling import TILED_DECODE_ABOVE


def denormalize(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The transformer's normalised latent (B, C, 1, H, W) -> the VAE's: ``latents * std + mean`` per channel,
    computed as the pipeline computes it (``latents / (1 / std) + mean``)."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    return latents / inv_std + mean


@torch.no_grad()
def decode_one_frame(pipe: Any, latents: torch.Tensor, tiled: bool | None = None) -> np.ndarray:
    """Float image in [0, 1], [height, width, 3], from the unpacked latent (1, C, H, W).

    ``tiled=None`` tiles large images only (``pipelines.sampling.TILED_DECODE_ABOVE``), with the VAE's own tiling:
    close to, not equal to, the untiled decode."""
    vae = pipe.vae
    latents = denormalize(vae, latents.to(device=vae.device, dtype=vae.dtype).unsqueeze(2))
    pixels = latents.shape[-2] * latents.shape[-1] * pipe.vae_scale_factor**2
    use_tiles = pixels > TILED_DECODE_ABOVE if tiled is None else tiled
    if use_tiles:
        vae.enable_tiling()
    try:
        image = vae.decode(latents, return_dict=False)[0][:, :, 0]
    finally:
        if use_tiles:
            vae.disable_tiling()
    return pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True])[0]
