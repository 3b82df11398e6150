"""Profile a model without running it at full size: FLOPs, parameter and activation bytes per layer.

The model and its inputs live on the meta device, so a forward computes shapes only: an SDXL UNet at
3840x3840 or Wan 14B over 81 frames profiles in seconds on a laptop CPU. Three things are read off it:

- FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; elementwise
  ops and norms count as zero, which the device's calibrated efficiency absorbs), per module;
- parameter bytes per module, at the profile's dtype;
- activation bytes: each leaf module's output bytes, and the peak of live activation bytes over the
  forward, tracked by a dispatch mode that adds every new (non-view) tensor's bytes when an op creates it
  and subtracts them when the tensor is freed. Attention scores are left out of the peak: every device we
  model runs a fused attention kernel (FlashAttention / memory-efficient SDPA / xformers) that never
  materializes them, while the meta forward runs the math path.

The patch-parallel layer shapes (``parallel.patch_traffic.record_patch_layers``) are recorded in the same
forward, so traffic formulas need no second pass.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from parallel.cost.models import ModelSpec, build_meta, example_inputs, get_model_spec
from parallel.patch.traffic import PatchLayerShapes, record_patch_layers

_SCORE_OPS = {"aten.bmm.default", "aten.baddbmm.default"}


@dataclass
class LayerCost:
    """One leaf module's share of a forward."""

    name: str
    """Qualified module name (a module with children appears for the ops it runs itself, e.g. attention)."""
    kind: str
    """Module class name."""
    flops: int
    """FLOPs of this module's forward (all calls)."""
    param_bytes: int
    """Bytes of this module's own parameters."""
    activation_bytes: int
    """Bytes of its outputs (all calls)."""


@dataclass
class ModelProfile:
    """Cost of one denoiser forward at one input size."""

    name: str
    """Model name (or class name for an unnamed module)."""
    kind: str
    """"unet", "dit" or "video-dit"."""
    batch: int
    """Batch of the profiled forward (2 with CFG batched)."""
    height: int
    """Image height in pixels."""
    width: int
    """Image width in pixels."""
    frames: int
    """Video frames (1 for images)."""
    dtype_bytes: int
    """Bytes per element of parameters and activations."""
    flops: int
    """FLOPs of the whole forward."""
    param_bytes: int
    """Bytes of all parameters."""
    activation_peak_bytes: int
    """Peak bytes of live activations (inputs included, attention scores excluded)."""
    ops: int
    """Number of dispatched ops that are not views (kernel launches) in the forward."""
    latent_bytes: int
    """Bytes of the latent the forward takes (and of the noise it returns, same shape)."""
    latent_rows: int
    """Latent rows: what patch parallelism splits."""
    layers: list[LayerCost] = field(default_factory=list)
    """Per layer (leaf modules, and modules for their own ops), in the order their first call ends;
    their FLOPs add up to ``flops``."""
    patch: PatchLayerShapes = field(default_factory=PatchLayerShapes)
    """Shapes of the band-aware layers (halo rows, K/V, GroupNorm), for the traffic formulas."""
    hidden_bytes_per_token: int = 0
    """Bytes of one token's hidden state between transformer blocks (DiTs; 0 for UNets)."""
    tokens: int = 0
    """Tokens the transformer blocks see (DiTs; 0 for UNets)."""
    blocks: int = 0
    """Transformer blocks in sequence (DiTs; 0 for UNets)."""
    row_align: int = 1
    """Latent rows a band must be a multiple of (2^downsamples for UNets, the patch size for DiTs)."""


class _LiveBytes(TorchDispatchMode):
    """Peak of live tensor bytes created by ops, and the count of ops that are not views (kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.ops = 0
        self._score_shapes: set[tuple[int, ...]] = set()
        """(numel, Lq, Lk) of attention score tensors seen so far."""

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        name = str(func)
        aliases = getattr(func, "is_view", False) or "_unsafe_view" in name
        self.ops += not aliases  # views launch no kernel
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or aliases or id(t) in inputs:
                continue
            key = (t.numel(),) + tuple(t.shape[-2:])
            if name in _SCORE_OPS and t.dim() == 3:
                # Q K^T: contracted dim (head width) smaller than both token counts -> attention scores
                a = args[-2] if name.startswith("aten.baddbmm") else args[0]
                if a.shape[-1] < min(t.shape[1], t.shape[2]):
                    self._score_shapes.add(key)
            if key in self._score_shapes:
                continue  # scores, softmax of scores, scaled scores: not materialized by fused kernels
            n = t.numel() * t.element_size()
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, n)
        return out


def profile_module(
    model: nn.Module,
    args: tuple,
    kwargs: dict[str, Any],
    name: str = "",
    kind: str = "unet",
    height: int = 0,
    width: int = 0,
    frames: int = 1,
) -> ModelProfile:
    """Profile one forward ``model(*args, **kwargs)``; inputs and model may be on meta or a real device."""
    latent = args[0]
    outputs: dict[nn.Module, int] = {}
    order: list[nn.Module] = []
    names = {m: n for n, m in model.named_modules()}

    def on_output(module: nn.Module, _args: tuple, out: Any) -> None:
        if module not in outputs:
            order.append(module)
        tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        outputs[module] = outputs.get(module, 0) + sum(t.numel() * t.element_size() for t in tensors)

    hooks = [m.register_forward_hook(on_output) for m in model.modules()]
    counter = FlopCounterMode(display=False)
    live = _LiveBytes()
    try:
        with torch.no_grad(), counter, live:
            patch = record_patch_layers(_band_aware_part(model, kind), lambda: model(*args, **kwargs))
    finally:
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()
    layers = []
    root = type(model).__name__

    def key(m: nn.Module) -> str:
        return root if m is model else f"{root}.{names[m]}"

    def total(m: nn.Module) -> int:
        return int(sum(per_module.get(key(m), {}).values()))

    def inner(m: nn.Module) -> int:
        """FLOPs of the nearest called descendants (containers like ModuleList are never called)."""
        return sum(total(c) if key(c) in per_module else inner(c) for c in m.children())

    for m in order:
        children = list(m.children())
        # a layer's own FLOPs: its total less its children's (attention scores live in the Attention module)
        flops = total(m) - inner(m)
        if children and flops <= 0:
            continue  # a container: its children are the layers
        qual = names[m] or root
        pbytes = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
        layers.append(LayerCost(qual, type(m).__name__, int(flops), int(pbytes), int(outputs[m])))
    input_bytes = sum(
        t.numel() * t.element_size() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
    )
    prof = ModelProfile(
        name=name or root,
        kind=kind,
        batch=latent.shape[0],
        height=height,
        width=width,
        frames=frames,
        dtype_bytes=latent.element_size(),
        flops=int(counter.get_total_flops()),
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        activation_peak_bytes=int(live.peak + input_bytes),
        ops=live.ops,
        latent_bytes=latent.numel() * latent.element_size(),
        latent_rows=latent.shape[-2],
        layers=layers,
        patch=patch,
    )
    _transformer_shape(model, prof)
    prof.row_align = _row_align(model, kind)
    return prof


def _row_align(model: nn.Module, kind: str) -> int:
    config = getattr(model, "config", None)
    if config is None:
        return 1
    if kind == "unet" and "block_out_channels" in config:
        return 2 ** (len(config.block_out_channels) - 1)
    patch = config.get("patch_size", 1) or 1
    return int(patch[-2]) if isinstance(patch, (list, tuple)) else int(patch)


def _band_aware_part(model: nn.Module, kind: str) -> nn.Module:
    """What patch parallelism patches: the whole UNet; only the transformer blocks of a DiT (its patch
    embedding is a stride = kernel conv that needs no halo)."""
    if kind == "unet":
        return model
    blocks = getattr(model, "transformer_blocks", None) or getattr(model, "blocks", None)
    return blocks if blocks is not None else model


def _transformer_shape(model: nn.Module, prof: ModelProfile) -> None:
    """Token count, hidden bytes per token and block count of a DiT (from its block list)."""
    blocks = getattr(model, "transformer_blocks", None) or getattr(model, "blocks", None)
    if blocks is None or prof.kind == "unet":
        return
    width = model.config.num_attention_heads * model.config.attention_head_dim
    patch = model.config.patch_size
    p = tuple(patch) if isinstance(patch, (list, tuple)) else (1, patch, patch)
    lat_frames = 1 if prof.kind == "dit" else (prof.frames - 1) // 4 + 1
    h, w = prof.latent_rows, prof.latent_bytes // prof.dtype_bytes // prof.batch // prof.latent_rows
    w = w // (model.config.in_channels * lat_frames)
    prof.tokens = (lat_frames // p[0]) * (h // p[1]) * (w // p[2])
    prof.hidden_bytes_per_token = width * prof.dtype_bytes
    prof.blocks = len(blocks)


def profile_model(
    model: str | ModelSpec,
    height: int,
    width: int,
    frames: int = 1,
    batch: int = 2,
    dtype: torch.dtype | None = None,
) -> ModelProfile:
    """Profile a registered model (see ``parallel.cost.models``) at this size on the meta device.

    ``batch=2`` is one forward with classifier-free guidance batched (conditional and unconditional).
    """
    spec = get_model_spec(model)
    dtype = dtype or getattr(torch, spec.dtype)
    net = build_meta(spec, dtype)
    args, kwargs = example_inputs(spec, batch, height, width, frames, dtype)
    return profile_module(net, args, kwargs, spec.name, spec.kind, height, width, frames)
