"""Patch (token-band) parallelism for DiT-style diffusers transformers (PixArt, DiT).

A band of latent rows (a multiple of ``patch_size`` high) is a band of whole patch rows, i.e. a
contiguous run of the token sequence. Per-token layers (LayerNorm, MLP, adaLN modulation, cross
attention, unpatchify) are local; self-attention gathers every band's K/V (``patch_attention``).
The one layer that must know where the band sits is the patch embedding: diffusers' ``PatchEmbed``
builds sin-cos positions from the *input* height, which for a band would be the positions of a
small image. Here it builds them for the full grid and keeps the band's rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from diffusers.models.embeddings import PatchEmbed, get_2d_sincos_pos_embed
from torch import nn

from parallel.comm import Comm
from parallel.patch_config import PatchConfig
from parallel.patch_runtime import PatchHandle, PatchRuntime
from parallel.patch_unet import install_step_hook, patch_modules


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


def parallelize_dit_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a PixArt-style transformer run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band
    (``hidden_states`` = band, conditioning unchanged). Band heights must be multiples of
    ``patch_size`` except the last, which must still be whole patches. Works in place.
    """
    if type(transformer).__name__ == "DiTTransformer2DModel":
        # its forward unpatchifies with height = width = sqrt(tokens): a band is never square
        raise NotImplementedError(
            "DiTTransformer2DModel assumes a square token grid in its forward, so it cannot run on a row "
            "band; use PixArtTransformer2DModel (or another PatchEmbed transformer with rectangular unpatchify)"
        )
    config = config or PatchConfig()
    patch = transformer.config.patch_size
    rt = PatchRuntime(Comm(group), config, align=patch)
    undo = patch_modules(transformer, rt, skip=(PatchEmbed,))
    for module in transformer.modules():
        if isinstance(module, PatchEmbed):
            undo.append(patch_patch_embed(module, rt))
    undo.append(install_step_hook(transformer, rt, "hidden_states"))
    return PatchHandle(transformer, rt, undo)
