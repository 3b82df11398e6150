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

The patch-parallel layer shapes (``parallel.patch_traffic.record_patch_layers``) and the attention layers'
sequence shapes (what sequence parallelism moves) are recorded in the same forward, so traffic formulas need no
second pass. So is which tokens each layer's FLOPs run over (``ModelProfile.image_flops`` / ``text_flops`` /
``shared_flops``): what each strategy splits between workers and what every worker runs whole.
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

from parallel.cost.models import (
    PACKED_KINDS,
    VIDEO_KINDS,
    ModelSpec,
    build_meta,
    example_inputs,
    get_model_spec,
)
from parallel.patch.traffic import (
    PatchLayerShapes,
    attention_inputs,
    is_band_attention,
    record_patch_layers,
    sequence_tokens,
)

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
class AttentionShapes:
    """Per self- or joint attention layer of a forward: what sequence parallelism moves around it."""

    tokens: list[int] = field(default_factory=list)
    """Tokens the attention runs over (a joint attention's text and image together)."""
    qkvo_bytes: list[int] = field(default_factory=list)
    """Bytes of its queries, keys, values and output over all those tokens (batch included): what Ulysses
    swaps by all-to-all, a share of it per worker."""
    kv_bytes: list[int] = field(default_factory=list)
    """Bytes of its keys and values over all those tokens: what Ring passes around, a share per worker."""
    heads: list[int] = field(default_factory=list)
    """Attention heads: Ulysses hands each of its workers a share of them."""


@dataclass
class ModelProfile:
    """Cost of one denoiser forward at one input size."""

    name: str
    """Model name (or class name for an unnamed module)."""
    kind: str
    """The spec's kind (``parallel.cost.models.KINDS``)."""
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
    latent_frames: int = 0
    """Latent frames of a video model's profile (its VAE's temporal factor applied); 0 when not known."""
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
    text_tokens: int = 0
    """Text tokens the denoiser takes (its ``encoder_hidden_states``)."""
    image_flops: int = 0
    """FLOPs over the image's tokens (or feature maps): what patch bands split."""
    text_flops: int = 0
    """FLOPs over the text tokens alone (text projections, an MMDiT's text stream, a joint attention's text
    queries): every band computes them whole; sequence parallelism splits them with the image."""
    shared_flops: int = 0
    """FLOPs over no token at all (timestep and pooled-text embeddings, adaLN modulations): every worker runs
    them whole under any strategy. ``image_flops + text_flops + shared_flops == flops``."""
    attention: AttentionShapes = field(default_factory=AttentionShapes)
    """Shapes of the self- and joint attention layers, for sequence parallelism's traffic."""
    output_bytes: int = 0
    """Bytes of the forward's output (the noise prediction; sequence parallelism gathers it)."""


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
    latent_rows: int | None = None,
    row_align: int | None = None,
) -> ModelProfile:
    """Profile one forward ``model(*args, **kwargs)``; inputs and model may be on meta or a real device.

    ``latent_rows`` / ``row_align``: the latent's rows and the band alignment, needed when the model takes
    packed tokens ("mmdit-ids", "mmdit-shapes": its first input has no rows); derived from the input and the
    config otherwise.
    """
    latent = args[0]
    if kind in PACKED_KINDS and latent_rows is None:
        raise ValueError(f"latent_rows: a {kind!r} model takes packed tokens; say how many latent rows they hold")
    outputs: dict[nn.Module, int] = {}
    order: list[nn.Module] = []
    names = {m: n for n, m in model.named_modules()}
    image_tokens = _image_tokens(model, kind, latent)
    text_tokens = _text_tokens(kind, args, kwargs)
    rows_of: dict[nn.Module, int | None] = {}
    """Per module, the tokens its last call ran over (``_query_tokens``)."""
    attention = AttentionShapes()

    def on_input(module: nn.Module, call_args: tuple, call_kwargs: dict) -> None:
        rows_of[module] = _query_tokens(module, call_args, call_kwargs)
        if isinstance(rows_of[module], int) and rows_of[module] > 0 and is_band_attention(module, call_args, call_kwargs):
            _record_attention(module, call_args, call_kwargs, attention)

    def on_output(module: nn.Module, _args: tuple, out: Any) -> None:
        if module not in outputs:
            order.append(module)
        tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        outputs[module] = outputs.get(module, 0) + sum(t.numel() * t.element_size() for t in tensors)

    hooks = [m.register_forward_hook(on_output) for m in model.modules()]
    hooks += [m.register_forward_pre_hook(on_input, with_kwargs=True) for m in model.modules()]
    counter = FlopCounterMode(display=False)
    live = _LiveBytes()
    try:
        with torch.no_grad(), counter, live:
            patch = record_patch_layers(
                _band_aware_part(model, kind), lambda: model(*args, **kwargs), image_tokens or None
            )
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

    split = [0.0, 0.0, 0.0]  # image, text, shared FLOPs
    for m in order:
        children = list(m.children())
        # a layer's own FLOPs: its total less its children's (attention scores live in the Attention module)
        flops = total(m) - inner(m)
        if children and flops <= 0:
            continue  # a container: its children are the layers
        qual = names[m] or root
        pbytes = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
        layers.append(LayerCost(qual, type(m).__name__, int(flops), int(pbytes), int(outputs[m])))
        for i, fraction in enumerate(_token_split(rows_of.get(m), image_tokens, text_tokens)):
            split[i] += flops * fraction
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
        latent_rows=latent_rows or latent.shape[-2],
        layers=layers,
        patch=patch,
        text_tokens=text_tokens,
        attention=attention,
        output_bytes=outputs.get(model, 0),
    )
    total_flops = prof.flops
    prof.text_flops, prof.shared_flops = round(split[1]), round(split[2])
    prof.image_flops = total_flops - prof.text_flops - prof.shared_flops
    _transformer_shape(model, prof, image_tokens)
    prof.row_align = row_align or _row_align(model, kind)
    return prof


GRID = -1
"""``_query_tokens`` of a module over a feature map or video grid (4-D or 5-D input): the image's."""


def _query_tokens(module: nn.Module, args: tuple, kwargs: dict) -> int | None:
    """Tokens a call of ``module`` computes over: L of a (B, L, D) input (a joint attention's image and text
    together), ``GRID`` for a feature map, None for an input without tokens ((B, D) embeddings)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    x = tensors[0] if tensors else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        x = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
    if x is None or x.dim() <= 2:
        return None
    if x.dim() > 3:
        return GRID
    tokens = x.shape[1]
    if is_band_attention(module, args, kwargs):
        _, encoder = attention_inputs(args, kwargs)
        if encoder is not None:  # a joint attention: the text's queries beside the image's
            tokens += encoder.shape[1]
    return tokens


def _token_split(tokens: int | None, image: int, text: int) -> tuple[float, float, float]:
    """Fractions of a layer's FLOPs over the image, over the text, and over neither, from the tokens it ran
    over (``_query_tokens``): its FLOPs grow with its query tokens, so a joint sequence of image and text
    tokens splits in their proportion. ``image`` is 0 for a UNet (many resolutions): then anything but the
    text is the image's."""
    if tokens is None:
        return (0.0, 0.0, 1.0)
    if text and tokens == text and tokens != image:
        return (0.0, 1.0, 0.0)
    if image and text and tokens == image + text:
        return (image / tokens, text / tokens, 0.0)
    return (1.0, 0.0, 0.0)


def _record_attention(module: nn.Module, args: tuple, kwargs: dict, shapes: AttentionShapes) -> None:
    """One self- or joint attention call's tokens, Q/K/V/output and K/V bytes, and heads."""
    hidden, encoder = attention_inputs(args, kwargs)
    tokens = sequence_tokens(hidden) + (encoder.shape[1] if encoder is not None else 0)
    per_token = hidden.shape[0] * hidden.element_size()
    q, k, v = module.to_q.out_features, module.to_k.out_features, module.to_v.out_features
    shapes.tokens.append(tokens)
    shapes.qkvo_bytes.append(tokens * per_token * (q + k + 2 * v))  # the output is as wide as V
    shapes.kv_bytes.append(tokens * per_token * (k + v))
    shapes.heads.append(int(module.heads))


def _image_tokens(model: nn.Module, kind: str, latent: torch.Tensor) -> int:
    """Tokens of the image in a transformer's sequence (0 for a UNet): a packed input's tokens, or the
    latent's (frames,) rows and columns over the patch."""
    if kind == "unet":
        return 0
    if kind in PACKED_KINDS:
        return latent.shape[1]
    patch = model.config.patch_size
    p = tuple(patch) if isinstance(patch, (list, tuple)) else (model.config.get("patch_size_t") or 1, patch, patch)
    frames = latent.shape[1 if kind == "video-mmdit-bfchw" else 2] if latent.dim() == 5 else 1
    return (frames // p[0]) * (latent.shape[-2] // p[-2]) * (latent.shape[-1] // p[-1])


def _text_tokens(kind: str, args: tuple, kwargs: dict) -> int:
    """Tokens of the text the denoiser takes (by keyword, or Wan's third positional input)."""
    text = kwargs.get("encoder_hidden_states")
    if text is None and kind == "video-dit" and len(args) > 2:
        text = args[2]
    return text.shape[1] if isinstance(text, torch.Tensor) else 0


def _row_align(model: nn.Module, kind: str) -> int:
    config = getattr(model, "config", None)
    if config is None:
        return 1
    if kind == "unet" and "block_out_channels" in config:
        return 2 ** (len(config.block_out_channels) - 1)
    patch = config.get("patch_size", 1) or 1
    return int(patch[-2]) if isinstance(patch, (list, tuple)) else int(patch)


BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks")
"""Attributes holding a transformer's blocks (Flux has double-stream and then single-stream ones)."""


def _blocks(model: nn.Module) -> list[nn.Module]:
    """Every transformer block of a DiT, in order."""
    return [block for name in BLOCK_LISTS for block in (getattr(model, name, None) or [])]


def _band_aware_part(model: nn.Module, kind: str) -> nn.Module:
    """What patch parallelism patches: the whole UNet; only the transformer blocks of a DiT (its patch
    embedding is a stride = kernel conv that needs no halo)."""
    if kind == "unet":
        return model
    blocks = _blocks(model)
    return nn.ModuleList(blocks) if blocks else model


def _transformer_shape(model: nn.Module, prof: ModelProfile, image_tokens: int) -> None:
    """Token count, hidden bytes per token and block count of a DiT (from its block lists)."""
    blocks = _blocks(model)
    if not blocks or prof.kind == "unet":
        return
    width = model.config.num_attention_heads * model.config.attention_head_dim
    prof.tokens = image_tokens
    prof.hidden_bytes_per_token = width * prof.dtype_bytes
    prof.blocks = len(blocks)


def profile_model(
    model: str | ModelSpec,
    height: int,
    width: int,
    frames: int = 1,
    batch: int | None = None,
    dtype: torch.dtype | None = None,
) -> ModelProfile:
    """Profile a registered model (see ``parallel.cost.models``) at this size on the meta device.

    ``batch``: 2 is one forward with classifier-free guidance batched (conditional and unconditional); None:
    the spec's ``batch``, the pipeline's default (1 for a guidance-distilled model such as FLUX.1-dev).
    """
    spec = get_model_spec(model)
    dtype = dtype or getattr(torch, spec.dtype)
    net = build_meta(spec, dtype)
    args, kwargs = example_inputs(spec, batch or spec.batch, height, width, frames, dtype)
    rows = spec.latent_shape(1, height, width, frames)[-2]
    align = spec.packing if spec.kind in PACKED_KINDS else None
    prof = profile_module(net, args, kwargs, spec.name, spec.kind, height, width, frames, rows, align)
    if spec.kind in VIDEO_KINDS:
        prof.latent_frames = spec.latent_shape(1, height, width, frames)[2]
    return prof
