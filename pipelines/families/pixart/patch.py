"""The PixArt family's patch plan: a PixArt-style transformer in token bands.

A band of latent rows is a run of whole patch rows, so every per-token layer is local; self-attention
gathers every band's K/V (generic), and diffusers' ``PatchEmbed`` adds the full image's positions for
the band's rows (``parallel.patch.embed``).
"""

from __future__ import annotations

import torch.distributed as dist
from diffusers import DiTTransformer2DModel
from diffusers.models.embeddings import PatchEmbed
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.embed import patch_patch_embed
from parallel.patch.parallelize import PatchPlan, parallelize_patch
from parallel.patch.runtime import PatchHandle


def pixart_patch_plan(transformer: nn.Module) -> PatchPlan:
    if isinstance(transformer, DiTTransformer2DModel):
        # its forward unpatchifies with height = width = sqrt(tokens): a band is never square
        raise NotImplementedError(
            "DiTTransformer2DModel assumes a square token grid in its forward, so it cannot run on a row "
            "band; use PixArtTransformer2DModel (or another PatchEmbed transformer with rectangular unpatchify)"
        )
    return PatchPlan(
        align=transformer.config.patch_size, input_name="hidden_states", special={PatchEmbed: patch_patch_embed}
    )


def parallelize_dit_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a PixArt-style transformer run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band
    (``hidden_states`` = band, conditioning unchanged). Band heights must be multiples of
    ``patch_size`` except the last, which must still be whole patches. Works in place.
    """
    return parallelize_patch(transformer, group, pixart_patch_plan(transformer), config)
