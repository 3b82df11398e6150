"""Decode the frame blocks of one LTX-Video render through ``AutoencoderKLLTXVideo``, block by block.

LTX's decoder is not causal (``decoder_causal=False``: each time convolution pads with the edge frames on
both sides) and keeps no cache between calls, so a block cannot continue the decoder's state of the one
before, as Wan's causal VAE does. Each block is decoded alone, with the previous block's last ``overlap``
latent frames in front of it (their frames are dropped again): that keeps the frame count of decoding the
whole video at once (the first latent frame gives one frame, every later one ``temporal_factor``) and gives
the block's first frames their left context. The right edge sees no frame of the next block, which has not
left the queue yet, so the frames differ from a whole-video decode: the seam, measured as PSNR by
``tests/video/test_ltx_pipeline.py``. It is not only at the border: the decoder's receptive field spans 8 to 16
latent frames each way, so on random latents every frame differs. ``python -m bench.ltx_decode_seam``
(BENCHMARKS.md, "LTX-Video's block-wise decode") measures what context on each side would buy: with 4 latent
frames of context each way 32-39 dB against today's 18-22, with 8 each way 59-93, with 16 equal up to float
rounding. A right context means holding each block's frames back until the next block has finished (and saving the
held latent in the checkpoint); that is not built.

Before decoding, each block gets what ``LTXPipeline.__call__`` does to the whole latent: the latents
normalisation undone (``_denormalize_latents`` with the VAE's ``latents_mean``/``latents_std``), and for a
timestep-conditioned decoder the ``decode_timestep`` passed to the VAE with ``decode_noise_scale`` of noise
mixed in (drawn per block from the decoder's ``seed``, since the pipeline's generator is not Tessera's). A job
reaches neither today: ``LTXVideoPipeline`` keeps ``LTXPipeline.__call__``'s defaults (decode timestep 0, so no
noise), and ``VideoSession`` builds the decoder with seed 0; a job option for them must pass its seed too.

The decoder's state between blocks (``cache``: the previous block's tail and the latent frames decoded so
far; ``first``) is what a service job's checkpoint carries (``runtime.jobs.video_state``).
"""

from __future__ import annotations

import numpy as np
import torch

_MIX = 0x9E3779B97F4A7C15


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


class LTXBlockDecoder:
    """Decodes consecutive frame blocks of one video; call it on the blocks in video order."""

    def __init__(
        self,
        vae: torch.nn.Module,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        seed: int = 0,
        overlap: int = 1,
    ) -> None:
        if overlap < 1:
            raise ValueError(f"overlap: at least one latent frame keeps the frame count, got {overlap}")
        self.vae = vae
        self.decode_timestep = decode_timestep
        self.noise_scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        self.seed = seed
        self.overlap = overlap
        self.cache: list = [None, 0]
        """[the previous block's last ``overlap`` normalised latent frames, latent frames decoded so far]."""
        self.first = True
        """The next block begins the video (nothing in front of it)."""

    def _prepare(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The VAE's latent and timestep for normalised latent frames ``z``, as LTXPipeline.__call__ makes them."""
        from diffusers import LTXPipeline

        vae = self.vae
        z = LTXPipeline._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        if not vae.config.timestep_conditioning:
            return z, None
        timestep = torch.tensor([self.decode_timestep], device=z.device, dtype=z.dtype)
        if self.noise_scale:
            generator = torch.Generator().manual_seed((self.seed * _MIX + self.cache[1] + 1) % 2**63)
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
            z = (1 - self.noise_scale) * z + self.noise_scale * noise
        return z, timestep

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] normalised latent frames -> [1, 3, F', H, W] video in [-1, 1], continuing the video."""
        vae = self.vae
        latent = latent.to(device=vae.device, dtype=vae.dtype)
        tail = self.cache[0]
        front = 0 if self.first or tail is None else tail.shape[2]
        z = latent if front == 0 else torch.cat([tail.to(latent), latent], dim=2)
        z, timestep = self._prepare(z)
        video = vae.decode(z, timestep, return_dict=False)[0]
        if front:
            video = video[:, :, 1 + vae.temporal_compression_ratio * (front - 1) :]
        self.cache = [latent[:, :, -self.overlap :].clone(), self.cache[1] + latent.shape[2]]
        self.first = False
        return video.clamp(-1.0, 1.0)

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, continuing the video."""
        return to_uint8_frames(self.decode(latent))
