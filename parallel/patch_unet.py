"""Patch (row-band) parallelism for diffusers UNets (DistriFusion-style).

After ``parallelize_unet_patch``, every rank calls the model on its own row band of the latent and
gets that band of the full-image output. What makes a band's output exact:

- Conv2d with a row kernel > 1 or a row stride > 1 pads with its neighbours' rows (``patch_conv``);
- GroupNorm uses the whole image's statistics (``patch_norm``);
- self-attention uses every band's K/V (``patch_attention``); cross-attention stays local;
- everything else (1x1 convs, linear layers, nearest upsampling, time embedding) is row-local.

Upsampling needs no change: nearest interpolation to ``upsample_size`` (which diffusers passes
when the latent is not a multiple of ``2**num_upsamplers``) maps output row ``d`` to input row
``floor(d/2)`` both for the full image and for an aligned band, so each band reproduces its rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch import nn

from parallel.comm import Comm
from parallel.patch_attention import is_self_attention, patch_self_attention
from parallel.patch_config import PatchConfig
from parallel.patch_conv import patch_conv2d
from parallel.patch_norm import patch_group_norm
from parallel.patch_runtime import PatchHandle, PatchRuntime


def unet_alignment(unet: nn.Module) -> int:
    """``2**(number of downsampling stages)``: the row alignment bands need for this UNet."""
    n = sum(1 for block in getattr(unet, "down_blocks", []) if getattr(block, "downsamplers", None))
    return 2**n


def patch_modules(
    model: nn.Module, rt: PatchRuntime, skip: tuple[type, ...] = ()
) -> list[Callable[[], None]]:
    """Patch every Conv2d needing a halo, every GroupNorm and every self-attention in ``model``.

    Modules nested inside an instance of a ``skip`` type are left alone (the caller handles them).
    """
    undo: list[Callable[[], None]] = []
    skipped: set[int] = set()
    for module in model.modules():
        if id(module) in skipped:
            continue
        if skip and isinstance(module, skip):
            skipped.update(id(m) for m in module.modules())
            continue
        if isinstance(module, nn.ConvTranspose2d) and module.kernel_size[0] > module.stride[0]:
            raise NotImplementedError(
                f"{type(module).__name__} with overlapping kernels needs halos: not supported"
            )
        if isinstance(module, nn.Conv2d) and (module.kernel_size[0] > 1 or module.stride[0] > 1):
            undo.append(patch_conv2d(module, rt))
        elif isinstance(module, nn.GroupNorm):
            undo.append(patch_group_norm(module, rt))
        elif is_self_attention(module):
            undo.append(patch_self_attention(module, rt))
    return undo


def install_step_hook(model: nn.Module, rt: PatchRuntime, input_name: str) -> Callable[[], None]:
    """Count forwards and learn the band geometry from the model's first input."""

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs[input_name]
        rt.begin_forward(x)

    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return handle.remove


def parallelize_unet_patch(
    unet: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make ``unet`` (UNet2DConditionModel or UNet2DModel) run on row bands of the latent over ``group``.

    Call it with the same config on every rank of ``group``, then run the usual forward on each rank's
    band: ``unet(band, t, encoder_hidden_states=...)``. Band heights must be multiples of
    ``unet_alignment(unet)`` except the last (use ``band_bounds``). Works in place on ``unet``.
    """
    config = config or PatchConfig()
    rt = PatchRuntime(Comm(group), config, unet_alignment(unet))
    undo = patch_modules(unet, rt)
    undo.append(install_step_hook(unet, rt, "sample"))
    return PatchHandle(unet, rt, undo)
