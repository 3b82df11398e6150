"""Decode latent frames through a per-frame 2-D VAE (the built-in video model's ``AutoencoderKL``) a few at a time.

Each latent frame decodes on its own, so the frames of a block are a batch the VAE could take at once, as it
did until 2026-12-03. On CPU a large batch is much slower per frame than a few frames at a time: the decoder's
full-resolution activations (128 to 512 channels) of a big batch no longer fit the caches, and its mid-block
attends over every latent pixel of each frame. ``python -m bench.per_frame_decode`` (BENCHMARKS.md, "The
built-in video model's per-frame VAE"; thread CPU seconds per 8-frame block, one torch thread, malloc as a CPU
worker sets it) measured 8 at once against 4 x 2: 0.17 / 0.16 s at 128x128, 1.73 / 0.70 at 256x256, 8.67 / 2.88
at 512x512; 2 x 4 was within 13% of 4 x 2 either way and 1 x 8 (diffusers' ``enable_slicing``) 9-56% slower. At
1024x1024, by hand, 4 x 2 took 43.6 s, 2 x 4 28.8 and 1 x 8 27.3.

Hence at most ``CHUNK_FRAMES`` frames and at most ``CHUNK_PIXELS`` decoded pixels per call: four frames up to
512x512, one from 1024x1024. The frames are those of one call (bit for bit on CPU,
``tests/video/test_per_frame_decode.py``): the decoder never mixes the frames of a batch.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_FRAMES = 4
"""Most latent frames one VAE call decodes."""
CHUNK_PIXELS = 512 * 512 * 4
"""Most decoded pixels (frames x height x width) one VAE call makes."""


def chunk_frames(height: int, width: int) -> int:
    """Latent frames one VAE call decodes for frames of ``height`` x ``width`` pixels (at least one)."""
    return max(1, min(CHUNK_FRAMES, CHUNK_PIXELS // (height * width)))


@torch.no_grad()
def decode_frames(vae: torch.nn.Module, latent: torch.Tensor, scale_factor: int) -> np.ndarray:
    """[1, C, F, h, w] latent frames -> [F, H, W, 3] uint8 frames, through ``vae`` a chunk of frames at a time
    (``scale_factor``: video pixels per latent pixel)."""
    frames = latent[0].transpose(0, 1).to(device=vae.device, dtype=vae.dtype)
    step = chunk_frames(frames.shape[-2] * scale_factor, frames.shape[-1] * scale_factor)
    parts = []
    for start in range(0, frames.shape[0], step):
        images = vae.decode(frames[start : start + step] / vae.config.scaling_factor, return_dict=False)[0]
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        parts.append(images.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
