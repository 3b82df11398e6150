"""The HunyuanVideo family's patch plan: ``HunyuanVideoTransformer3DModel`` on row bands of every frame.

A band is a run of latent rows (dim -2) of every frame, a multiple of the patch height, so after the patch
embedding a rank holds rows ``[a, b)`` of the (frame, row, column) token grid, and the whole prompt. What keeps a
band's output equal to the whole latent's:

- the patch embedding (a Conv3d whose kernel is its stride), the AdaLN modulation, the feed-forwards, the output
  norm, ``proj_out`` and the unpatchify are per token: local;
- the rotary table is the whole grid's, this band's rows kept (``rope`` would number the band's rows from 0);
- attention is joint over video and text tokens in both the dual- and the single-stream blocks (one processor,
  ``HunyuanVideoAttnProcessor2_0``): ``HunyuanBandJointAttnProcessor`` gathers every band's video K (after its
  RMSNorm and rotary) and V into the whole video's (frame, row, column) order, followed by the text K/V, the keys
  of one device's attention in one device's order. The queries are this band's video tokens and the whole
  prompt's, so every rank computes the same text stream. The key mask is the model's own for the text tokens
  (its forward builds it from this band's length; the text part does not depend on it) with every video key
  attended.

Displaced mode (DistriFusion) works as for Wan: after the warm-up steps, the other bands' K/V are the previous
step's, exchanged while this step computes (``parallel.patch.attention.gather_band_kv``).

diffusers 0.42 ships no ``_cp_plan`` for this model, and one would not fit the joint attention: its forward builds
the [video; text] mask from the video length it sees, and Ulysses over split video tokens beside a whole prompt
would repeat the text keys once per worker in the joint softmax. Bands keep the prompt whole on every rank and
gather only video K/V, so they need no change to the model's forward; Tessera's own Ulysses for this model
(``ulysses``) splits the video the same way and exchanges Q/K/V by heads instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

from parallel.patch.attention import gather_video_band_kv
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, require_input_dims
from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import install_processor, replace_forward
from pipelines.families.hunyuanvideo.frames import joint_outputs, joint_projections

GRID = "hunyuan_grid"
"""``rt.remember`` key of this forward's post-patch (frames, band rows, columns)."""
BAND_TOKENS = "hunyuan_band_tokens"
"""``rt.remember`` key of every band's video tokens this forward, in rank order (the sequence plan's all-to-all)."""


def rotated_projections(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, ...]:
    """``joint_projections`` of a band, the rotary positions (this band's rows) on the video's queries and keys."""
    query, key, value, text_query, text_key, text_value = joint_projections(attn, hidden_states, encoder_hidden_states)
    if image_rotary_emb is not None:
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    return query, key, value, text_query, text_key, text_value


def joint_key_mask(attention_mask: torch.Tensor | None, text_tokens: int, video_keys: int) -> torch.Tensor | None:
    """The key mask of ``[video_keys video keys; the prompt]`` from the model's own (built for the band's length,
    [B, 1, 1, band + text]): every video key attended, the model's mask on the prompt's keys."""
    if attention_mask is None:
        return None
    text_mask = attention_mask[..., -text_tokens:]
    return torch.cat([text_mask.new_ones(*text_mask.shape[:-1], video_keys), text_mask], dim=-1)


class HunyuanBandJointAttnProcessor:
    """``HunyuanVideoAttnProcessor2_0`` on a band of video tokens, with the video K/V gathered over the bands."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        self.rt = rt
        self.key = ("kv", layer)

    def gather_kv(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, band tokens, heads, 2 * head_dim) -> (B, video tokens, heads, 2 * head_dim) in the whole video's
        (frame, row, column) order."""
        return gather_video_band_kv(self.rt, self.key, kv, self.rt.recall(GRID)[0])

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        video_tokens = hidden_states.shape[1]
        query, key, value, text_query, text_key, text_value = rotated_projections(
            attn, hidden_states, encoder_hidden_states, image_rotary_emb
        )
        head_dim = key.shape[-1]
        key, value = self.gather_kv(torch.cat([key, value], dim=-1)).split(head_dim, dim=-1)
        mask = joint_key_mask(attention_mask, text_key.shape[1], key.shape[1])
        out = dispatch_attention_fn(
            torch.cat([query, text_query], dim=1),
            torch.cat([key, text_key], dim=1),
            torch.cat([value, text_value], dim=1),
            attn_mask=mask,
            dropout_p=0.0,
            is_causal=False,
        )
        return joint_outputs(attn, out.to(query.dtype), video_tokens)


def patch_hunyuan_rope(rope: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``rope`` return the whole grid's rotary table, this band's rows only."""
    cls_forward = type(rope).forward
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, frames, rows, cols = hidden_states.shape
        p, p_t = rope.patch_size, rope.patch_size_t
        assert rt.bounds is not None, "the geometry is learned in the model's forward pre-hook"
        a, b = rt.bounds[rt.rank]
        if rows != b - a:
            raise ValueError(f"band has {rows} latent rows but the bands say {b - a} for rank {rt.rank}")
        full_rows = rt.bounds[-1][1]
        grid = (frames // p_t, full_rows // p, cols // p)
        rt.remember(GRID, (grid[0], rows // p, grid[2]))
        rt.remember(BAND_TOKENS, [grid[0] * ((hi - lo) // p) * grid[2] for lo, hi in rt.bounds])
        key = (frames, full_rows, cols, a, b, hidden_states.device)
        if key not in cache:
            cache.clear()
            # the table depends only on the shape: an empty one-channel latent of the whole grid stands for it
            cos, sin = cls_forward(rope, hidden_states.new_empty((1, 1, frames, full_rows, cols)))

            def band(table: torch.Tensor) -> torch.Tensor:
                table = table.reshape(*grid, table.shape[-1])[:, a // p : b // p]
                return table.reshape(-1, table.shape[-1])

            cache[key] = (band(cos), band(sin))
        return cache[key]

    return replace_forward(rope, forward)


def patch_hunyuan_layers(
    transformer: nn.Module, rt: PatchRuntime, processor: Callable = HunyuanBandJointAttnProcessor
) -> list[Callable[[], None]]:
    """The rotary table (whole grid, this band's rows) and ``processor`` (the bands' K/V gather, or the sequence
    plan's Ulysses: ``processor(rt, layer id)``) in the joint attention of every dual- and single-stream block."""
    undo = [patch_hunyuan_rope(transformer.rope, rt)]
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        undo.append(install_processor(block.attn, processor(rt, rt.new_layer_id())))
    return undo


def check_hunyuan_input(args: tuple, kwargs: dict) -> None:
    """Bands take a (B, C, F, H, W) latent."""
    require_input_dims(args, kwargs, 5, "(B, C, F, H, W)")


def check_hunyuan_model(transformer: nn.Module) -> None:
    """The band and sequence plans are written for the text-to-video transformer."""
    if not isinstance(transformer, HunyuanVideoTransformer3DModel):
        raise TypeError(f"transformer: expected a HunyuanVideoTransformer3DModel, got {type(transformer).__name__}")
    if transformer.config.image_condition_type is not None:
        raise ValueError(
            f"transformer: image-conditioned HunyuanVideo ({transformer.config.image_condition_type}) has no band plan"
        )


def hunyuan_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    check_hunyuan_model(transformer)
    if config.kv_source != "kv":
        raise NotImplementedError(
            f"PatchConfig.kv_source={config.kv_source!r}: HunyuanVideo's K carry rotary positions of their own band, "
            "so its bands exchange K and V (kv_source='kv')"
        )
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        patch_layers=patch_hunyuan_layers,
        check_input=check_hunyuan_input,
    )
