"""A cheap preview of a latent: a linear map of its channels to RGB, no VAE decode.

A family may give its VAE's own map (``ModelFamily.latent_rgb_factors``: a channels x 3 matrix and an RGB bias,
fitted against its decoder); without one, ``default_factors`` groups the channels by count: channel i adds to
colour i mod 3. That default is not fitted to any VAE: it shows where the latent has structure (shapes, bands,
the progress of the denoising), not the true colours. The result is stretched to the 1st-99th percentile of
its values, so a noisy early latent and a clean late one both fill the range.
"""

from __future__ import annotations

import io

import numpy as np
import torch


def default_factors(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels x 3 matrix, RGB bias) of the default map: each colour the mean of every third channel."""
    matrix = torch.zeros(channels, 3)
    for channel in range(channels):
        matrix[channel, channel % 3] = 1.0
    counts = matrix.sum(0).clamp(min=1.0)
    return matrix / counts, torch.zeros(3)


def latent_rgb(latent: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """(rows, columns, 3) uint8 of a (channels, rows, columns) latent; a video latent (channels, frames, rows,
    columns) shows its middle frame."""
    latent = latent.detach().float().cpu()
    if latent.ndim == 4:
        latent = latent[:, latent.shape[1] // 2]
    if latent.ndim != 3:
        raise ValueError(f"latent: expected (channels, rows, columns), got shape {tuple(latent.shape)}")
    matrix, bias = factors if factors is not None else default_factors(latent.shape[0])
    rgb = torch.einsum("chw,cr->hwr", latent, torch.as_tensor(matrix, dtype=torch.float32)) + torch.as_tensor(bias)
    low, high = torch.quantile(rgb.flatten(), torch.tensor([0.01, 0.99]))
    scaled = ((rgb - low) / (high - low).clamp(min=1e-6)).clamp(0, 1)
    return (scaled * 255).round().to(torch.uint8).numpy()


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
