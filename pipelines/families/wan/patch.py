"""The Wan family's patch plan: diffusers' ``WanTransformer3DModel`` (Wan 2.1 / 2.2 video DiT) on row bands.

The input is a (B, C, F, H, W) latent; a band is a run of latent rows (dim -2) of *every* frame, a
multiple of the patch height ``p_h`` high, so after patchify a rank holds rows ``[a, b)`` of the
(frame, row, column) token grid. What makes a band's output exact:

- the patch embedding is a Conv3d whose kernel equals its stride: row-local, nothing to do;
- the rotary embedding is computed for the full grid and this band's rows kept (``rope`` would
  otherwise number the band's rows from 0);
- self-attention (``attn1``) gathers every band's keys (after RMSNorm and rotary) and values, and
  reorders them into the full sequence's (frame, row, column) order, so the attention sums run in
  the same order as on one device;
- cross-attention (``attn2``: text, and image tokens for I2V), the adaLN modulation, the
  feed-forward, the output norm, ``proj_out`` and the unpatchify are per token, so local.

Displaced mode (DistriFusion) works as for PixArt: each ``attn1`` uses the previous step's K/V of
the other bands, gathered asynchronously while the current step computes.

The caller slices the band (``slice_band(latent, bounds, rank)``, rows are dim -2) and gathers the
outputs (``gather_bands(..., dim=-2)``), as for the other patch-parallel models.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.distributed as dist
from diffusers import WanTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttention, _get_qkv_projections
from torch import nn

from parallel.patch.attention import gather_video_band_kv
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, parallelize_patch, require_input_dims
from parallel.patch.runtime import PatchHandle, PatchRuntime
from parallel.patch.swap import install_processor, replace_forward

GRID = "wan_grid"
"""``rt.remember`` key of this forward's post-patch (frames, band rows, columns)."""


def _apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """diffusers' ``WanAttnProcessor`` rotary (a closure there, so it cannot be imported)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class WanBandSelfAttnProcessor:
    """``WanAttnProcessor`` for ``attn1`` on a band of tokens, with K/V gathered over the bands."""

    def __init__(self, rt: PatchRuntime, layer: int, attention_backend: str | None = None):
        self.rt = rt
        self.key = ("kv", layer)
        self._attention_backend = attention_backend

    def gather_kv(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, N_band, heads, 2*head_dim) -> (B, N_full, heads, 2*head_dim) in full token order (each band holds
        its rows of every frame)."""
        return gather_video_band_kv(self.rt, self.key, kv, self.rt.recall(GRID)[0])

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise NotImplementedError("WanBandSelfAttnProcessor is for self-attention (attn1) only")
        if attention_mask is not None:
            raise NotImplementedError("patch-parallel self-attention does not support an attention mask")
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_rotary(query, *rotary_emb)
            key = _apply_rotary(key, *rotary_emb)
        head_dim = key.shape[-1]
        kv = self.gather_kv(torch.cat([key, value], dim=-1))
        key, value = kv.split(head_dim, dim=-1)
        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=None,
        )
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def patch_wan_rope(rope: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``rope`` return the full grid's rotary frequencies for this band's rows only."""
    cls_forward = type(rope).forward
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, frames, rows, cols = hidden_states.shape
        p_t, p_h, p_w = rope.patch_size
        assert rt.bounds is not None, "geometry is learned in the model's forward pre-hook"
        a, b = rt.bounds[rt.rank]
        if rows != b - a:
            raise ValueError(f"band has {rows} latent rows but the bands say {b - a} for rank {rt.rank}")
        full_rows = rt.bounds[-1][1]
        ppf, ppw = frames // p_t, cols // p_w
        rt.remember(GRID, (ppf, rows // p_h, ppw))
        key = (frames, full_rows, cols, a, b, hidden_states.device)
        if key not in cache:
            cache.clear()
            # rope reads only the shape: a meta tensor of the full latent's shape stands for it
            full = torch.empty((1, 1, frames, full_rows, cols), device="meta")
            cos, sin = cls_forward(rope, full)
            first, n = a // p_h, rows // p_h

            def band(f: torch.Tensor) -> torch.Tensor:
                grid = f.reshape(1, ppf, full_rows // p_h, ppw, 1, f.shape[-1])
                return grid[:, :, first : first + n].reshape(1, -1, 1, f.shape[-1])

            cache[key] = (band(cos), band(sin))
        return cache[key]

    return replace_forward(rope, forward)


def patch_wan_self_attention(attn: WanAttention, rt: PatchRuntime) -> Callable[[], None]:
    """Install ``WanBandSelfAttnProcessor`` on ``attn``; returns the function restoring the old one."""
    backend = getattr(attn.processor, "_attention_backend", None)
    return install_processor(attn, WanBandSelfAttnProcessor(rt, rt.new_layer_id(), backend))


def check_wan_input(args: tuple, kwargs: dict, patch_size: tuple[int, int, int] = (1, 2, 2)) -> None:
    """Bands take a (B, C, F, H, W) latent with one timestep per sample, or per token of the band (Wan 2.2 TI2V's
    ``expand_timesteps``: the timestep is per token, so a band's are its own tokens', in its (frame, row, column)
    order; the full video's would not match the band's tokens)."""
    require_input_dims(args, kwargs, 5, "(B, C, F, H, W)")
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    if t is not None and t.dim() == 2:
        latent = args[0] if args else kwargs["hidden_states"]
        _, _, frames, rows, cols = latent.shape
        p_t, p_h, p_w = patch_size
        tokens = (frames // p_t) * (rows // p_h) * (cols // p_w)
        if t.shape[1] != tokens:
            raise ValueError(
                f"timestep: a per-token timestep on a band must be the band's {tokens} tokens, got {t.shape[1]} "
                "(the whole video's?)"
            )


def patch_wan_layers(transformer: nn.Module, rt: PatchRuntime) -> list[Callable[[], None]]:
    """The rotary embedding (full grid, this band's rows) and every block's self-attention (``attn1``)."""
    undo = [patch_wan_rope(transformer.rope, rt)]
    for block in transformer.blocks:
        undo.append(patch_wan_self_attention(block.attn1, rt))
    return undo


def wan_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    if not isinstance(transformer, WanTransformer3DModel):
        raise TypeError(f"transformer: expected a WanTransformer3DModel, got {type(transformer).__name__}")
    if getattr(transformer, "_parallel_config", None) is not None:
        raise RuntimeError("transformer: diffusers' enable_parallelism was already applied to this model")
    if config.kv_source != "kv":
        raise NotImplementedError(
            f"PatchConfig.kv_source={config.kv_source!r}: Wan's K/V carry rotary positions of their own band, "
            "so Wan bands exchange K and V (kv_source='kv')"
        )
    return PatchPlan(
        align=transformer.config.patch_size[1],
        input_name="hidden_states",
        patch_layers=patch_wan_layers,
        check_input=partial(check_wan_input, patch_size=tuple(transformer.config.patch_size)),
    )


def parallelize_wan_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a ``WanTransformer3DModel`` run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band:
    ``transformer(band, timestep, encoder_hidden_states)`` with ``band`` = rows ``bounds[rank]``
    (dim -2) of every frame of the latent, conditioning unchanged. Band heights must be multiples of
    the patch height (``band_bounds(H, world, align=patch_size[1])``). Works in place.
    """
    config = config or PatchConfig()
    return parallelize_patch(transformer, group, wan_patch_plan(transformer, config), config)
