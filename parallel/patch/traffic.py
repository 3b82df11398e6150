"""Bytes a patch-parallel step sends, computed from layer shapes instead of measured.

`record_patch_layers` runs one forward of the plain model on one device with hooks and notes what
each band-aware layer would exchange; `patch_bytes_per_worker` turns that into the mean bytes a worker
sends per step at any degree, for two schemes:

- "neighbour" (ours): conv halos go point-to-point to the two neighbours only;
- "allgather" (distrifuser's): every worker all-gathers its top and bottom `padding` boundary rows
  of every conv to every other worker.

Both all-gather self-attention K/V and all-reduce GroupNorm statistics, so those terms are shared.
Bytes are counted as `parallel.comm.Comm` counts them: a tensor delivered to each peer counts once
per peer. Bands are taken as equal (the uneven remainder row is ignored).

Joint text-image attention (MMDiT: SD3's, Flux's) counts as the bands run it: the image tokens' K/V are
exchanged, the text's are computed whole on every band and never sent. A single-stream block attends over
the text and the image in one sequence; ``image_tokens`` tells the recorder how much of it is the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_processor import Attention
from torch import nn

from parallel.patch.config import KV_SOURCES
from parallel.patch.conv import conv_row_geometry

SCHEMES = ("neighbour", "allgather")


@dataclass
class PatchLayerShapes:
    halo_rows: list[tuple[int, int, int]] = field(default_factory=list)
    """Per conv with a row kernel > 1: (bytes of one input row over batch and channels, rows from the
    band above, rows from the band below)."""
    padding_rows: list[tuple[int, int]] = field(default_factory=list)
    """Per conv: (bytes of one input row, padding rows) - what an all-gather scheme sends per side."""
    kv_bytes: list[int] = field(default_factory=list)
    """Per self- or joint attention layer: bytes of the full image's K and V together (not the text's)."""
    input_bytes: list[int] = field(default_factory=list)
    """Per self-attention layer: bytes of the full image's attention input (what ``kv_source="input"`` sends)."""
    norm_bytes: list[int] = field(default_factory=list)
    """Per GroupNorm: bytes of the statistics one worker contributes (float64 sums, sums of squares, count)."""


def attention_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden_states, encoder_hidden_states) of a call of a diffusers attention module (by keyword or in
    the order of its ``forward``)."""
    hidden = args[0] if args else kwargs["hidden_states"]
    encoder = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
    return hidden, encoder


def is_band_attention(module: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether this call of ``module`` attends over the image's tokens, so that bands exchange its K/V: a
    self-attention, or a joint text-image attention (the text through its own projections, ``add_k_proj``);
    not a cross-attention, whose keys and values are the text's alone."""
    if isinstance(module, Attention):
        return not module.is_cross_attention
    if isinstance(module, AttentionModuleMixin):
        _, encoder = attention_inputs(args, kwargs)
        return encoder is None or getattr(module, "add_k_proj", None) is not None
    return False


def sequence_tokens(x: torch.Tensor) -> int:
    """Tokens of an attention input: (B, L, D), or a (B, C, H, W) feature map's H x W."""
    return x.shape[1] * x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[1]


def record_patch_layers(
    model: nn.Module, run: Callable[[], object], image_tokens: int | None = None
) -> PatchLayerShapes:
    """Shapes of every band-aware layer, from one full-size forward `run()` of the unpatched model.

    ``image_tokens``: the image's tokens in a transformer's sequence; an attention over more (a single-stream
    block's text and image) exchanges the image's K/V only. None: every token of a self-attention is the image's.
    """
    shapes = PatchLayerShapes()
    hooks = []

    def on_conv(conv: nn.Conv2d, args: tuple) -> None:
        x = args[0]
        k, s, p = conv_row_geometry(conv)
        if k <= 1:
            return
        row = x.shape[0] * x.shape[1] * x.shape[3] * x.element_size()
        shapes.halo_rows.append((row, p, max(0, k - s - p)))
        shapes.padding_rows.append((row, p))

    def on_attention(attn: nn.Module, args: tuple, kwargs: dict) -> None:
        if not is_band_attention(attn, args, kwargs):
            return
        x, _ = attention_inputs(args, kwargs)
        tokens = sequence_tokens(x)
        if image_tokens is not None:
            tokens = min(tokens, image_tokens)  # the rest of a single-stream sequence is text, kept whole
        batch = x.shape[0]
        width = attn.to_k.out_features + attn.to_v.out_features
        shapes.kv_bytes.append(batch * tokens * width * x.element_size())
        shapes.input_bytes.append(batch * tokens * attn.to_k.in_features * x.element_size())

    def on_norm(norm: nn.GroupNorm, args: tuple) -> None:
        x = args[0]
        # what parallel.patch_norm.local_group_sums all-reduces: float64 sum and sum of squares per
        # (sample, group), plus one element count
        shapes.norm_bytes.append((2 * x.shape[0] * norm.num_groups + 1) * 8)

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(on_conv))
        elif isinstance(module, nn.GroupNorm):
            hooks.append(module.register_forward_pre_hook(on_norm))
        elif isinstance(module, (Attention, AttentionModuleMixin)):
            hooks.append(module.register_forward_pre_hook(on_attention, with_kwargs=True))
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def attention_bytes(shapes: PatchLayerShapes, kv_source: str) -> list[int]:
    """Per self-attention layer, the full image's bytes of what the bands exchange (``PatchConfig.kv_source``)."""
    if kv_source not in KV_SOURCES:
        raise ValueError(f"kv_source: unknown {kv_source!r}; expected one of {KV_SOURCES}")
    return shapes.kv_bytes if kv_source == "kv" else shapes.input_bytes


def patch_bytes_per_worker(
    shapes: PatchLayerShapes, world: int, scheme: str = "neighbour", kv_source: str = "kv"
) -> dict[str, float]:
    """Mean bytes one worker sends per step, by kind ("halo", "kv", "norm"), at `world` bands; "kv" counts
    K and V, or the attention inputs with ``kv_source="input"``."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: unknown scheme {scheme!r}; expected one of {SCHEMES}")
    if world <= 1:
        return {"halo": 0.0, "kv": 0.0, "norm": 0.0}
    peers = world - 1
    if scheme == "neighbour":
        # world-1 band boundaries; across each, rows go up and down once
        halo = sum(row * (above + below) for row, above, below in shapes.halo_rows) * peers / world
    else:
        halo = sum(row * 2 * pad for row, pad in shapes.padding_rows) * peers
    kv = sum(attention_bytes(shapes, kv_source)) / world * peers
    norm = sum(shapes.norm_bytes) * peers
    return {"halo": float(halo), "kv": float(kv), "norm": float(norm)}


def patch_bytes_per_rank(
    shapes: PatchLayerShapes, bounds: list[tuple[int, int]], kv_source: str = "kv"
) -> list[dict[str, float]]:
    """Bytes each rank sends per step, by kind, for these (possibly uneven) row bands.

    Exact where `patch_bytes_per_worker` averages: the top and bottom bands send halos one way only, and
    each band sends its own K/V (its share of the rows) to every other band (`Comm.exchange_with_all`).
    """
    world = len(bounds)
    if world <= 1:
        return [{"halo": 0.0, "kv": 0.0, "norm": 0.0}]
    height = bounds[-1][1] - bounds[0][0]
    down = sum(row * above for row, above, _ in shapes.halo_rows)  # to the band below: its `above` rows
    up = sum(row * below for row, _, below in shapes.halo_rows)  # to the band above: its `below` rows
    kv = sum(attention_bytes(shapes, kv_source)) * (world - 1) / height
    norm = sum(shapes.norm_bytes) * (world - 1)
    return [
        {"halo": float(down * (r < world - 1) + up * (r > 0)), "kv": float(kv * (b - a)), "norm": float(norm)}
        for r, (a, b) in enumerate(bounds)
    ]
