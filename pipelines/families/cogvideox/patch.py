"""The CogVideoX family's patch plan: ``CogVideoXTransformer3DModel`` (1.0 and 1.5) on row bands of every frame.

The input is CogVideoX's (B, F, C, H, W) latent; a band is a run of latent rows (dim -2) of every frame, a multiple
of the patch size, so after the patch embedding a rank holds rows ``[a, b)`` of the (token frame, row, column)
grid, and the whole prompt. What keeps a band's output equal to the whole latent's:

- the patch projection (a convolution whose kernel is its stride, or 1.5's linear layer over 2 x 2 x 2 patches),
  the adaLN modulations, the feed-forwards, the final norms, ``proj_out`` and the unpatchify are per token: local;
- the 1.0 config's sincos positions are added to the patches by ``patch_embed``, from a table of the size it sees:
  ``patch_cogvideox_embed`` lets it embed the band without them and adds this band's rows of the whole video's
  table (the one ``patch_embed`` itself uses for that size), which is exact (the table's text part is zeros);
- the rotary table (rotary configs) comes into the forward for the whole video, as ``CogVideoXPipeline`` makes
  it; the attention keeps this band's rows of it;
- attention is joint over ``[text; video]`` (``CogVideoXAttnProcessor2_0``): ``CogVideoXBandJointAttnProcessor``
  gathers every band's video K (after its norm and rotary) and V into the whole video's order behind the text's,
  the keys of one device's attention in one device's order; the queries are the whole prompt's and this band's,
  so every rank computes the same text stream. CogVideoX's attention takes no mask.

Displaced mode (DistriFusion) works as for Wan: after the warm-up steps, the other bands' K/V are the previous
step's (``parallel.patch.attention.gather_band_kv``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

from parallel.patch.attention import gather_video_band_kv
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, require_input_dims
from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import install_processor, replace_forward
from pipelines.families.cogvideox.frames import joint_projections

GRID = "cogvideox_grid"
"""``rt.remember`` key of this forward's (token frames, band token rows, token columns, first band token row,
whole video's token rows)."""

BAND_TOKENS = "cogvideox_band_tokens"
"""``rt.remember`` key of every band's video tokens this forward, in rank order (the sequence plan's all-to-all)."""

Rope = tuple[torch.Tensor, torch.Tensor]


def _band_rows(table: torch.Tensor, grid: tuple[int, int, int, int, int]) -> torch.Tensor:
    """[..., whole video's tokens, D] -> [..., this band's tokens, D]: the rows ``[first, first + rows)`` of every
    token frame."""
    frames, rows, cols, first, full_rows = grid
    lead = table.shape[:-2]
    table = table.reshape(*lead, frames, full_rows, cols, table.shape[-1])[..., :, first : first + rows, :, :]
    return table.reshape(*lead, frames * rows * cols, table.shape[-1])


def patch_cogvideox_embed(embed: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``patch_embed`` learn the band's token grid, and take the whole video's positions for this band."""
    cls_forward = type(embed).forward
    cache: dict[tuple, torch.Tensor] = {}

    def forward(text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        _, frames, _, rows, cols = image_embeds.shape
        p, p_t = embed.patch_size, embed.patch_size_t or 1
        assert rt.bounds is not None, "the geometry is learned in the model's forward pre-hook"
        a, b = rt.bounds[rt.rank]
        if rows != b - a:
            raise ValueError(f"band has {rows} latent rows but the bands say {b - a} for rank {rt.rank}")
        full_rows = rt.bounds[-1][1]
        grid = (frames // p_t, rows // p, cols // p, a // p, full_rows // p)
        rt.remember(GRID, grid)
        rt.remember(BAND_TOKENS, [grid[0] * ((hi - lo) // p) * grid[2] for lo, hi in rt.bounds])
        positions = embed.use_positional_embeddings or embed.use_learned_positional_embeddings
        if not positions:
            return cls_forward(embed, text_embeds, image_embeds)
        saved = (embed.use_positional_embeddings, embed.use_learned_positional_embeddings)
        embed.use_positional_embeddings = embed.use_learned_positional_embeddings = False  # the band's own, none
        try:
            embeds = cls_forward(embed, text_embeds, image_embeds)
        finally:
            embed.use_positional_embeddings, embed.use_learned_positional_embeddings = saved
        key = (frames, full_rows, cols, a, b, embeds.device, embeds.dtype)
        if key not in cache:
            cache.clear()
            frames_in = (frames - 1) * embed.temporal_compression_ratio + 1
            sample = (embed.sample_height, embed.sample_width, embed.sample_frames)
            # the choice ``patch_embed`` makes for the whole video's size
            if embed.use_learned_positional_embeddings and (full_rows, cols) != sample[:2]:
                raise ValueError(
                    f"height/width: learned positional embeddings take only the sample size {sample[:2]} latent "
                    f"pixels, got {(full_rows, cols)}"
                )
            if (full_rows, cols, frames_in) == sample:
                table = embed.pos_embedding
            else:
                table = embed._get_positional_embeddings(full_rows, cols, frames_in, device=embeds.device)
            cache[key] = _band_rows(table[:, embed.max_text_seq_length :], grid).to(embeds.dtype)
        text = text_embeds.shape[1]
        return torch.cat([embeds[:, :text], embeds[:, text:] + cache[key]], dim=1)

    return replace_forward(embed, forward)


class CogVideoXBandJointAttnProcessor:
    """``CogVideoXAttnProcessor2_0`` on ``[text; band]`` tokens, with the video K/V gathered over the bands."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        self.rt = rt
        self.key = ("kv", layer)
        self._rope: tuple | None = None

    def band_rope(self, rope: Rope) -> Rope:
        """This band's rows of the whole video's rotary table (kept while the table is the same)."""
        grid = self.rt.recall(GRID)
        key = (rope[0].data_ptr(), tuple(rope[0].shape), grid)
        if self._rope is None or self._rope[0] != key:
            self._rope = (key, (_band_rows(rope[0], grid), _band_rows(rope[1], grid)))
        return self._rope[1]

    def gather_kv(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, band tokens, heads, 2 * head_dim) -> (B, video tokens, heads, 2 * head_dim) in the whole video's
        (token frame, row, column) order."""
        return gather_video_band_kv(self.rt, self.key, kv, self.rt.recall(GRID)[0])

    def projections(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_rotary_emb: Rope | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``joint_projections`` of ``[text; band]`` (B, heads, tokens, head_dim), this band's rows of the rotary
        table on the video's queries and keys."""
        if attention_mask is not None:
            raise NotImplementedError("CogVideoX bands: the joint attention takes no mask")
        text = encoder_hidden_states.size(1)
        query, key, value = joint_projections(attn, hidden_states, encoder_hidden_states)
        if image_rotary_emb is not None:
            rope = self.band_rope(image_rotary_emb)
            query = torch.cat([query[:, :, :text], apply_rotary_emb(query[:, :, text:], rope)], dim=2)
            key = torch.cat([key[:, :, :text], apply_rotary_emb(key[:, :, text:], rope)], dim=2)
        return query, key, value

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Rope | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text = encoder_hidden_states.size(1)
        query, key, value = self.projections(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        batch, head_dim = query.shape[0], query.shape[-1]
        # the video K/V of every band, (B, tokens, heads, 2 * head_dim) for the exchange
        kv = torch.cat([key[:, :, text:], value[:, :, text:]], dim=-1).transpose(1, 2)
        video_key, video_value = self.gather_kv(kv).transpose(1, 2).split(head_dim, dim=-1)
        out = F.scaled_dot_product_attention(
            query,
            torch.cat([key[:, :, :text], video_key], dim=2),
            torch.cat([value[:, :, :text], video_value], dim=2),
            dropout_p=0.0,
            is_causal=False,
        )
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video_out = out.split([text, out.size(1) - text], dim=1)
        return video_out, encoder_out


def patch_cogvideox_layers(
    transformer: nn.Module, rt: PatchRuntime, processor: Callable = CogVideoXBandJointAttnProcessor
) -> list[Callable[[], None]]:
    """The patch embedding (the band's grid, the whole video's positions) and ``processor`` (the bands' K/V gather,
    or the sequence plan's Ulysses: ``processor(rt, layer id)``) in every block's joint attention."""
    undo = [patch_cogvideox_embed(transformer.patch_embed, rt)]
    for block in transformer.transformer_blocks:
        undo.append(install_processor(block.attn1, processor(rt, rt.new_layer_id())))
    return undo


def check_cogvideox_input(args: tuple, kwargs: dict) -> None:
    """Bands take CogVideoX's (B, F, C, H, W) latent."""
    require_input_dims(args, kwargs, 5, "(B, F, C, H, W)")


def check_cogvideox_model(transformer: nn.Module) -> None:
    """The band and sequence plans are written for the text-to-video transformer."""
    if not isinstance(transformer, CogVideoXTransformer3DModel):
        raise TypeError(f"transformer: expected a CogVideoXTransformer3DModel, got {type(transformer).__name__}")
    if transformer.ofs_embedding is not None:
        raise ValueError("transformer: image-to-video CogVideoX transformers (ofs_embed_dim) have no band plan")


def cogvideox_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    check_cogvideox_model(transformer)
    if config.kv_source != "kv":
        raise NotImplementedError(
            f"PatchConfig.kv_source={config.kv_source!r}: CogVideoX's video K carry rotary positions of their own "
            "band, so its bands exchange K and V (kv_source='kv')"
        )
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        patch_layers=patch_cogvideox_layers,
        check_input=check_cogvideox_input,
    )
