"""The LTX-Video family's patch plan: ``LTXVideoTransformer3DModel`` on row bands of every frame.

``LTXBandAdapter`` runs the model's own forward on a band of latent rows of every frame, packed as ``LTXPipeline``
packs a latent (tokens in (frame, row, column) order; LTX-Video's patch is one latent pixel). The model learns its
band geometry from that packed input, in tokens (``PatchPlan.input_align`` 1): a band of ``r`` rows of ``F`` frames
``W`` wide is ``F * r * W`` tokens, so the row bounds are the token bounds over ``F * W``. What keeps a band's
output equal to the whole latent's:

- ``proj_in``, the timestep and caption embeddings, the adaLN modulations, the feed-forwards, the output norm and
  ``proj_out`` are per token: local; cross-attention (``attn2``) reads the whole prompt on every band: local;
- the rotary table (``rope``) is built for the latent size the forward is told, so it is built for the whole video
  and this band's rows kept;
- self-attention (``attn1``, ``LTXBandSelfAttnProcessor``) gathers every band's K (after LTX's RMSNorm over the
  heads and the rotary embedding) and V into the whole video's (frame, row, column) order.

Displaced mode (DistriFusion) works as for Wan (``parallel.patch.attention.gather_band_kv``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import LTXPipeline, LTXVideoTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_ltx import apply_rotary_emb
from torch import nn

from parallel.patch.attention import gather_video_band_kv
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, require_input_dims
from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import install_processor, replace_forward
from pipelines.families.ltx.sequence import LTXSequenceAdapter, SequenceInputs

GRID = "ltx_grid"
"""``rt.remember`` key of this forward's latent frames."""


class LTXBandAdapter(LTXSequenceAdapter):
    """The model's own forward on a band of rows of every frame (the latent itself is the hidden state, so that
    ``BandSplit`` cuts rows): the band packed, the model called with the band's size, the output unpacked."""

    def embed(self, latent: torch.Tensor, cond: SequenceInputs | None = None) -> torch.Tensor:
        return latent.to(self.model.proj_in.weight.dtype)

    def forward(self, hidden: torch.Tensor, cond: SequenceInputs) -> torch.Tensor:
        """``LTXPipeline.__call__``'s transformer call on the band: [B, C, F, rows, W] -> the same shape."""
        _, _, frames, rows, width = hidden.shape
        out = self.call_model(LTXPipeline._pack_latents(hidden, 1, 1), cond, frames, rows, width)
        return LTXPipeline._unpack_latents(out, frames, rows, width, 1, 1)

    def head(self, hidden: torch.Tensor, cond: SequenceInputs) -> torch.Tensor:
        """As ``LTXPipeline.__call__``: ``noise_pred.float()`` before guidance and the step."""
        return hidden.float()

    def hidden_shape(self, batch: int = 1, cond: SequenceInputs | None = None) -> tuple[int, ...]:
        return (batch, *self.block_shape)


class LTXBandSelfAttnProcessor:
    """``LTXVideoAttnProcessor`` for ``attn1`` on a band of tokens, with K/V gathered over the bands."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        self.rt = rt
        self.key = ("kv", layer)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise NotImplementedError("LTXBandSelfAttnProcessor is for the unmasked self-attention (attn1) only")
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if image_rotary_emb is not None:
            query, key = apply_rotary_emb(query, image_rotary_emb), apply_rotary_emb(key, image_rotary_emb)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        head_dim = key.shape[-1]
        kv = gather_video_band_kv(self.rt, self.key, torch.cat([key, value], dim=-1), self.rt.recall(GRID))
        key, value = kv.split(head_dim, dim=-1)
        out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def patch_ltx_rope(rope: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``rope`` build the whole video's table and keep this band's rows (the bounds are in tokens)."""
    cls_forward = type(rope).forward
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(hidden_states, num_frames=None, height=None, width=None, rope_interpolation_scale=None, video_coords=None):
        if video_coords is not None:
            raise NotImplementedError("LTX bands: video_coords (conditioning frames) are not supported")
        assert rt.bounds is not None, "the geometry is learned in the model's forward pre-hook"
        per_row = num_frames * width
        a, b = (t // per_row for t in rt.bounds[rt.rank])
        full_rows = rt.bounds[-1][1] // per_row
        if height != b - a:
            raise ValueError(f"band has {height} latent rows but the bands say {b - a} for rank {rt.rank}")
        rt.remember(GRID, num_frames)
        key = (hidden_states.shape[0], num_frames, full_rows, width, a, b, tuple(rope_interpolation_scale or ()))
        if key not in cache:
            cache.clear()
            tables = cls_forward(rope, hidden_states, num_frames, full_rows, width, rope_interpolation_scale, None)

            def band(table: torch.Tensor) -> torch.Tensor:
                grid = table.reshape(table.shape[0], num_frames, full_rows, width, table.shape[-1])
                return grid[:, :, a:b].reshape(table.shape[0], -1, table.shape[-1])

            cache[key] = tuple(band(t) for t in tables)
        return cache[key]

    return replace_forward(rope, forward)


def patch_ltx_layers(transformer: nn.Module, rt: PatchRuntime) -> list[Callable[[], None]]:
    """The rotary table (the whole video's, this band's rows) and every block's self-attention."""
    undo = [patch_ltx_rope(transformer.rope, rt)]
    for block in transformer.transformer_blocks:
        undo.append(install_processor(block.attn1, LTXBandSelfAttnProcessor(rt, rt.new_layer_id())))
    return undo


def check_ltx_input(args: tuple, kwargs: dict) -> None:
    """Bands take LTX's packed tokens (B, tokens, C)."""
    require_input_dims(args, kwargs, 3, "packed (B, tokens, C)")


def ltx_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    if not isinstance(transformer, LTXVideoTransformer3DModel):
        raise TypeError(f"transformer: expected a LTXVideoTransformer3DModel, got {type(transformer).__name__}")
    if (transformer.config.patch_size, transformer.config.patch_size_t) != (1, 1):
        raise ValueError("transformer: the LTX band plan takes LTX-Video's one-pixel patches (patch_size 1)")
    if config.kv_source != "kv":
        raise NotImplementedError(
            f"PatchConfig.kv_source={config.kv_source!r}: LTX's K carry rotary positions of their own band, so its "
            "bands exchange K and V (kv_source='kv')"
        )
    return PatchPlan(
        align=1, input_name="hidden_states", patch_layers=patch_ltx_layers, check_input=check_ltx_input, input_align=1
    )
