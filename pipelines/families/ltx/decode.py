"""Decode the frame blocks of one LTX-Video render through ``AutoencoderKLLTXVideo``, block by block.

LTX's decoder is not causal (``decoder_causal=False``: each time convolution pads with the edge frames on
both sides) and keeps no cache between calls, so a block cannot continue the decoder's state of the one
before, as Wan's causal VAE does, and its receptive field spans 8 to 16 latent frames each way. So each
block's latent frames are decoded in a window with ``context`` latent frames on each side (their frames are
dropped again): the ones decoded before it, and the ones after it, which are held back until the blocks
after it have left the queue (or the video ends there). ``python -m bench.ltx_decode_seam`` (BENCHMARKS.md,
"LTX-Video's block-wise decode") measured what the context buys against decoding the whole video at once: the
previous latent frame only (what Tessera did before, still ``context=0``) 18-22 dB, 4 each way 32-39 dB, 8
each way 59-93 dB (under a quarter of a uint8 step), 16 each way equal up to float rounding. The default is 8
(``LTXFamily.decode_context``; a job's ``decode_context``); each block then decodes its own frames and up to 16 more
latent frames, which this VAE's 32x32x8 compression keeps cheap beside the transformer.

Which latent frames a call decodes is a rule of the counts alone (everything
received but the last ``context``, everything at the video's end), so the stage that receives the frames
from another decoding stage knows each block's frame count in advance (``block_video_frames``); the first
blocks of a long context give no frames at all, the last gives the rest. The first latent frame decodes to
one frame, every later one to the decoder's frames per latent frame (``decoder_factors``): the whole decode's
count.

Before decoding, each window gets what ``LTXPipeline.__call__`` does to the whole latent: the latents
normalisation undone (``_denormalize_latents`` with the VAE's ``latents_mean``/``latents_std``), and for a
timestep-conditioned decoder the ``decode_timestep`` passed to the VAE with ``decode_noise_scale`` of noise
mixed in (drawn per latent frame from the decoder's ``seed`` and the frame's index, so a frame gets the same
noise as context and as its own window's; the pipeline's generator is not Tessera's). A job sets them with its
``decode_timestep``/``decode_noise_scale`` (``LTXPipeline.__call__``'s defaults without), and ``VideoSession``
builds the decoder with the job's seed.

The decoder's state between blocks (the held latent frames with the decoded context in front of them, and the
counts) is what a service job's checkpoint carries (``export_state``, ``runtime.jobs.video_state``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipelines.frame_counts import decoded_frame_count
from pipelines.video_pipeline import decodable_latent_frames

_MIX = 0x9E3779B97F4A7C15


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def decoder_factors(vae: Any) -> tuple[int, int]:
    """(video frames, pixels) per latent frame and latent pixel that an ``AutoencoderKLLTXVideo``'s decoder makes:
    its patch times 2 per up block that scales (each doubles the frames but the first: ``2 f - 1``). LTX-Video's
    VAEs decode as they encode (``temporal``/``spatial_compression_ratio``); the VAE diffusers' own tests build does
    not (its encoder scales twice, its decoder three times), and ``LTXPipeline`` returns what the decoder makes."""
    return decoder_factors_of(vae.config)


def decoder_factors_of(config: Any) -> tuple[int, int]:
    """``decoder_factors`` from the VAE's config (a mapping: its config.json at submit, or the loaded one's; a key
    it lacks takes ``AutoencoderKLLTXVideo``'s default)."""
    scaling = 2 ** sum(bool(s) for s in config.get("decoder_spatio_temporal_scaling", (True, True, True, False)))
    return int(config.get("patch_size_t", 1)) * scaling, int(config.get("patch_size", 4)) * scaling


class LTXBlockDecoder:
    """Decodes consecutive frame blocks of one video; call it on the blocks in video order. Each call returns
    the frames of the latent frames it could decode (``decodable_latent_frames``), maybe none."""

    def __init__(
        self,
        vae: torch.nn.Module,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        seed: int = 0,
        context: int = 0,
        video_latent_frames: int | None = None,
    ) -> None:
        """``context``: latent frames on each side of a decoded window (0: the previous latent frame only,
        nothing after); ``video_latent_frames``: the video's latent frames, which the frames after a block
        are held back for (None: each call decodes what it is given, continuing the video)."""
        if context < 0:
            raise ValueError(f"decode_context: latent frames of context must be >= 0, got {context}")
        self.vae = vae
        self.decode_timestep = decode_timestep
        self.noise_scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        self.seed = seed
        self.left = max(1, context)
        """Decoded latent frames kept in front of the next window (one at least: the frame count)."""
        self.right = context if video_latent_frames is not None else 0
        self.video_latent_frames = video_latent_frames
        self.window: torch.Tensor | None = None
        """Normalised latent frames: up to ``left`` decoded ones, then every one received and not decoded."""
        self.decoded = 0
        self.received = 0
        self.frames_per_latent, self.pixels_per_latent = decoder_factors(vae)

    def _prepare(self, z: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The VAE's latent and timestep for normalised latent frames ``z`` (the video's from index ``first``), as
        LTXPipeline.__call__ makes them."""
        from diffusers import LTXPipeline

        vae = self.vae
        z = LTXPipeline._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        if not vae.config.timestep_conditioning:
            return z, None
        timestep = torch.tensor([self.decode_timestep], device=z.device, dtype=z.dtype)
        if self.noise_scale:
            shape = (*z.shape[:2], 1, *z.shape[3:])
            frames = range(first, first + z.shape[2])
            noise = torch.cat([self._frame_noise(shape, index, z.dtype) for index in frames], dim=2)
            z = (1 - self.noise_scale) * z + self.noise_scale * noise
        return z, timestep

    def _frame_noise(self, shape: tuple[int, ...], index: int, dtype: torch.dtype) -> torch.Tensor:
        """Latent frame ``index``'s decode noise (the same in every window the frame is in), drawn in float32 and
        rounded to ``dtype``, as ``parallel.frames.noise.noise_template`` says why."""
        generator = torch.Generator().manual_seed((self.seed * _MIX + index + 1) % 2**63)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.vae.device, dtype)

    def _video_frames(self, latent_frames: int) -> int:
        return decoded_frame_count(latent_frames, self.frames_per_latent)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] normalised latent frames -> [1, 3, F', H, W] video in [-1, 1]: the frames of the latent
        frames now decodable (none while the block's right context is still to come), continuing the video."""
        vae = self.vae
        latent = latent.to(device=vae.device, dtype=vae.dtype)
        self.window = latent if self.window is None else torch.cat([self.window.to(latent), latent], dim=2)
        self.received += latent.shape[2]
        ready = decodable_latent_frames(self.received, self.video_latent_frames, self.right)
        if ready == self.decoded:
            height, width = (side * self.pixels_per_latent for side in latent.shape[3:])
            return torch.zeros(1, 3, 0, height, width, dtype=vae.dtype, device=vae.device)
        front = self.window.shape[2] - (self.received - self.decoded)  # decoded frames in front: left context
        z, timestep = self._prepare(self.window, self.decoded - front)
        video = vae.decode(z, timestep, return_dict=False)[0]
        start = 1 + self.frames_per_latent * (front - 1) if front else 0
        count = self._video_frames(ready) - self._video_frames(self.decoded)
        video = video[:, :, start : start + count]
        keep = min(self.left, ready)  # decoded frames to keep in front of the next window
        self.window = self.window[:, :, front + (ready - self.decoded) - keep :].clone()
        self.decoded = ready
        return video.clamp(-1.0, 1.0)

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, continuing the video."""
        return to_uint8_frames(self.decode(latent))

    def export_state(self) -> dict:
        """The state a checkpoint carries: the held latent frames (with their left context) and the counts."""
        window = None if self.window is None else self.window.detach().cpu().clone()
        return {"window": window, "decoded": self.decoded, "received": self.received}

    def load_state(self, state: dict) -> None:
        """Continue from ``export_state``'s output (or a checkpoint of the decoder before it held frames back:
        ``cache`` = [the last latent frame decoded, latent frames decoded], ``first``)."""
        if "cache" in state:
            tail, decoded = state["cache"]
            state = {"window": None if state["first"] else tail, "decoded": decoded, "received": decoded}
        window = state["window"]
        self.window = None if window is None else window.to(self.vae.device)
        self.decoded, self.received = int(state["decoded"]), int(state["received"])
