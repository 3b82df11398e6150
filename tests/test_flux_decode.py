"""Flux's decode undoes its latent normalisation where FluxPipeline does: on the VAE's device, in its dtype.

Found on a GPU (bfloat16): a worker's stitched latent arrives on the CPU, and dividing it there (true division)
instead of on the GPU (a multiply by the reciprocal) left one bfloat16 ulp in some values, 6 levels of the decoded
image. On the CPU only the dtype half of that can be seen: a float32 latent must be cast before the arithmetic."""

from __future__ import annotations

import torch
from _tiny_flux import save_tiny_flux

from pipelines.families import family_for_dir
from pipelines.sampling import vae_decode


def test_flux_decode_unscales_in_the_vae_dtype(tmp_path):
    model_dir = save_tiny_flux(tmp_path / "tiny-flux")
    family = family_for_dir(model_dir)
    pipe = family.load(model_dir, "bfloat16", "cpu")
    latents = torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(0)) * 3  # float32, as a resume may
    config = pipe.vae.config
    as_flux_pipeline = vae_decode(pipe, latents.to(torch.bfloat16) / config.scaling_factor + config.shift_factor)
    in_float32 = vae_decode(pipe, (latents / config.scaling_factor + config.shift_factor).to(torch.bfloat16))
    assert (as_flux_pipeline != in_float32).any()  # the case tells the two orders apart
    assert (family.decode(pipe, latents) == as_flux_pipeline).all()
