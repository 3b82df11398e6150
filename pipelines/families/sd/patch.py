"""The UNet family's patch plan: diffusers UNets (UNet2DConditionModel, UNet2DModel) on row bands.

Every layer that is not row-local is one the generic mechanics already handle (3x3 convolutions,
stride-2 downsampling, GroupNorm, self-attention), so the plan only says how bands must align.
Upsampling needs no change: nearest interpolation to ``upsample_size`` (which diffusers passes when the
latent is not a multiple of ``2**num_upsamplers``) maps output row ``d`` to input row ``floor(d/2)``
both for the full image and for an aligned band, so each band reproduces its rows.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, parallelize_patch
from parallel.patch.runtime import PatchHandle


def unet_alignment(unet: nn.Module) -> int:
    """``2**(number of downsampling stages)``: the row alignment bands need for this UNet."""
    n = sum(1 for block in getattr(unet, "down_blocks", []) if getattr(block, "downsamplers", None))
    return 2**n


def unet_patch_plan(unet: nn.Module) -> PatchPlan:
    return PatchPlan(align=unet_alignment(unet), input_name="sample")


def parallelize_unet_patch(
    unet: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make ``unet`` (UNet2DConditionModel or UNet2DModel) run on row bands of the latent over ``group``.

    Call it with the same config on every rank of ``group``, then run the usual forward on each rank's
    band: ``unet(band, t, encoder_hidden_states=...)``. Band heights must be multiples of
    ``unet_alignment(unet)`` except the last (use ``band_bounds``). Works in place on ``unet``.
    """
    return parallelize_patch(unet, group, unet_patch_plan(unet), config)
