"""Decode latent frames through a per-frame 2-D VAE (the built-in video model's ``AutoencoderKL``) a few at a time.

Each latent frame decodes on its own, so the frames of a block are a batch the VAE could take at once, as it
did until 2026-12-03. On CPU a large batch is much slower per frame than a few frames at a time: the decoder's
activations (128 to 512 channels at full resolution) of a big batch no longer fit the caches, and the
mid-block's attention over every latent pixel grows with the batch. Measured with ``python -m
bench.per_frame_decode`` (one torch thread, malloc as a CPU worker sets it; seconds per 8-frame block):

=========  ========  ========  ========  ========
size       8 at once 4 x 2     2 x 4     1 x 8
=========  ========  ========  ========  ========
128x128    0.26      0.22      0.22      0.28
256x256    1.49      0.84      0.83      0.96
512x512    12.0      3.3       3.4       4.5
1024x1024  --        43.6      28.8      27.3
=========  ========  ========  ========  ========

Hence at most ``CHUNK_FRAMES`` frames, and at most ``CHUNK_PIXELS`` decoded pixels, per call: four frames up to
512x512, one at 1024x1024. A single frame per call (diffusers' ``enable_slicing``) is slower below 1024 pixels.
The frames equal one call's: the decoder never mixes frames of a batch.
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
