"""diffusers' ``PatchEmbed`` on a band of latent rows, for DiT-style transformers in token bands.

A band of latent rows (a multiple of ``patch_size`` high) is a band of whole patch rows, i.e. a
contiguous run of the token sequence. Per-token layers (LayerNorm, MLP, adaLN modulation, cross
attention, unpatchify) are local; self-attention gathers every band's K/V (``attention``).
The one layer that must know where the band sits is the patch embedding: diffusers' ``PatchEmbed``
builds sin-cos positions from the *input* height, which for a band would be the positions of a
small image. ``patch_patch_embed`` builds them for the full grid and keeps the band's rows; a family
whose transformer embeds patches with ``PatchEmbed`` names it in its ``PatchPlan.special``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.embeddings import PatchEmbed, get_2d_sincos_pos_embed

from parallel.patch.runtime import PatchRuntime


def full_grid_pos_embed(emb: PatchEmbed, rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """(1, rows*cols, D) positions of the full ``rows`` x ``cols`` latent, as ``emb.forward`` would
    compute them for the whole image in one piece."""
    if emb.pos_embed_max_size:
        return emb.cropped_pos_embed(rows, cols)
    h, w = rows // emb.patch_size, cols // emb.patch_size
    if (h, w) == (emb.height, emb.width):
        return emb.pos_embed
    pos = get_2d_sincos_pos_embed(
        embed_dim=emb.pos_embed.shape[-1],
        grid_size=(h, w),
        base_size=emb.base_size,
        interpolation_scale=emb.interpolation_scale,
        device=device,
        output_type="pt",
    )
    return pos.float().unsqueeze(0)


def patch_patch_embed(emb: PatchEmbed, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``emb`` add the full image's positional embedding rows of this band."""
    cache: dict[tuple, torch.Tensor] = {}

    def forward(latent: torch.Tensor) -> torch.Tensor:
        p = emb.patch_size
        if latent.shape[-2] % p or latent.shape[-1] % p:
            raise ValueError(f"band of shape {tuple(latent.shape)} is not made of whole {p}x{p} patches")
        band_rows = latent.shape[-2] // p
        x = emb.proj(latent)
        if emb.flatten:
            x = x.flatten(2).transpose(1, 2)
        if emb.layer_norm:
            x = emb.norm(x)
        if emb.pos_embed is None:
            return x.to(x.dtype)
        assert rt.bounds is not None, "geometry is learned in the model's forward pre-hook"
        rows, cols = rt.bounds[-1][1], latent.shape[-1]
        key = (rows, cols, latent.device)
        if key not in cache:
            cache.clear()
            cache[key] = full_grid_pos_embed(emb, rows, cols, latent.device)
        pos = cache[key]
        first = rt.bounds[rt.rank][0] // p
        grid_w = cols // p
        pos = pos.reshape(1, -1, grid_w, pos.shape[-1])[:, first : first + band_rows].reshape(
            1, -1, pos.shape[-1]
        )
        return (x + pos).to(x.dtype)

    emb.forward = forward

    def undo() -> None:
        del emb.forward

    return undo
