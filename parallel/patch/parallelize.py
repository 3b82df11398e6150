"""Apply patch (row-band) parallelism to a model, following a plan the model's family supplies.

After ``parallelize_patch``, every rank calls the model on its own row band of the latent and gets
that band of the full-image output. The generic mechanics cover the layers that are not row-local:

- Conv2d with a row kernel > 1 or a row stride > 1 pads with its neighbours' rows (``conv``);
- GroupNorm uses the whole image's statistics (``norm``);
- self-attention uses every band's K/V (``attention``); cross-attention stays local;
- everything else (1x1 convs, linear layers, nearest upsampling, time embedding) is row-local.

What differs between model families is data in a ``PatchPlan``: the row alignment bands need, the
forward argument holding the latent, and the modules the family patches itself (a DiT's patch
embedding, Wan's rotary embedding), much as diffusers keeps a context-parallel plan on a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch.distributed as dist
from torch import nn

from parallel.comm import Comm
from parallel.patch.attention import is_self_attention, patch_self_attention
from parallel.patch.config import PatchConfig
from parallel.patch.conv import patch_conv2d
from parallel.patch.norm import patch_group_norm
from parallel.patch.runtime import PatchHandle, PatchRuntime

Undo = Callable[[], None]
LayerPatcher = Callable[[nn.Module, PatchRuntime], Undo]
"""Patches one module in place for bands; returns the function that restores it."""
InputCheck = Callable[[tuple, dict], None]
"""Called with a forward's (args, kwargs) before it runs; raises on inputs bands cannot take."""


def require_input_dims(args: tuple, kwargs: dict, dims: int, layout: str, name: str = "hidden_states") -> None:
    """For a plan's ``check_input``: refuse, naming ``name``, a forward whose latent input (the first positional
    argument, or ``name`` by keyword) is not the ``dims``-dimensional ``layout`` (e.g. "(B, C, F, H, W)")."""
    x = args[0] if args else kwargs[name]
    if x.dim() != dims:
        raise ValueError(f"{name}: expected a {layout} band, got shape {tuple(x.shape)}")


def generic_layers(model: nn.Module, rt: PatchRuntime, special: Mapping[type, LayerPatcher]) -> list[Undo]:
    """Patch every Conv2d needing a halo, every GroupNorm and every self-attention in ``model``.

    A module that is an instance of a ``special`` type gets that type's patcher instead, and the modules
    inside it are left alone (the patcher handles them)."""
    undo: list[Undo] = []
    skipped: set[int] = set()
    for module in model.modules():
        if id(module) in skipped:
            continue
        patcher = next((p for kind, p in special.items() if isinstance(module, kind)), None)
        if patcher is not None:
            skipped.update(id(m) for m in module.modules())
            undo.append(patcher(module, rt))
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


@dataclass(frozen=True)
class PatchPlan:
    """How one model runs on row bands: what a model family supplies to ``parallelize_patch``."""

    align: int
    """Latent rows every band but the last must be a multiple of (stride-2 downsamples, patch height)."""
    input_name: str = "sample"
    """The forward argument holding the latent, when it is passed by keyword (the geometry comes from it)."""
    special: Mapping[type, LayerPatcher] = field(default_factory=dict)
    """Module types the family patches itself, each with its patcher; the modules inside are left alone."""
    patch_layers: Callable[[nn.Module, PatchRuntime], list[Undo]] | None = None
    """Patches the whole model instead of the generic mechanics (a model whose layers they do not fit)."""
    check_input: InputCheck | None = None
    """Refuses a forward's inputs that bands cannot take, before the forward runs."""
    input_align: int | None = None
    """What the bands of the forward's input (its dim -2) must be a multiple of, when the model takes the
    latent in another layout than rows: a transformer taking packed tokens (``r`` latent rows of a band are
    ``r/2 * columns/2`` tokens) learns its band geometry in tokens, 1. None: ``align``."""


def install_step_hook(model: nn.Module, rt: PatchRuntime, plan: PatchPlan) -> Undo:
    """Count forwards and learn the band geometry from the model's first input."""

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        if plan.check_input is not None:
            plan.check_input(args, kwargs)
        rt.begin_forward(args[0] if args else kwargs[plan.input_name])

    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return handle.remove


def parallelize_patch(
    model: nn.Module, group: dist.ProcessGroup | None, plan: PatchPlan, config: PatchConfig | None = None
) -> PatchHandle:
    """Make ``model`` run on row bands of the latent over ``group``, as ``plan`` says. Works in place.

    Call it with the same plan and config on every rank of ``group``, then run the usual forward on each
    rank's band. Band heights must be multiples of ``plan.align`` except the last (use ``band_bounds``)."""
    config = config or PatchConfig()
    rt = PatchRuntime(Comm(group), config, plan.align if plan.input_align is None else plan.input_align)
    if plan.patch_layers is not None:
        undo = plan.patch_layers(model, rt)
    else:
        undo = generic_layers(model, rt, plan.special)
    undo.append(install_step_hook(model, rt, plan))
    return PatchHandle(model, rt, undo)
