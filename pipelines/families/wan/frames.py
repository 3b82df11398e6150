"""The Wan family's frame plan: WanTransformer3DModel cut into the pieces the frame pipeline runs on its stages.

``WanFrameAdapter`` splits the model's own forward into ``embed`` (patch embedding, stage 0),
``conditions`` (timestep and text embeddings, cheap, recomputed on every stage instead of being
sent), ``run_layer`` (one ``WanTransformerBlock``) and ``head`` (output norm, projection and
unpatchify, last stage); run in sequence they equal ``model(...)``. ``install_context_attention``
swaps each block's self-attention processor for ``ContextSelfAttnProcessor``, which lets a frame
block also attend to its neighbours' edge frames from the ``FeatureCache``.

RoPE: a block's own frames sit at frame positions ``context_frames .. context_frames + F - 1``,
the previous block's last frames just before them and the next block's first frames just after, so
the relative offsets the rotary embedding encodes are the true ones across block borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from parallel.frames.cache import FeatureCache

Rope = tuple[torch.Tensor, torch.Tensor]


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Wan's interleaved rotary embedding on [B, tokens, heads, head_dim] (as WanAttnProcessor applies it)."""
    cos, sin = rope
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


@dataclass
class BlockContext:
    """What the patched self-attention needs to know about the frame block passing through it."""

    block: int
    """Index of the frame block in the video."""
    context_tokens: int
    """Tokens in ``context_frames`` frames (0: blocks attend only to themselves)."""
    rope_prev: Rope | None
    """RoPE of the frame positions just before the block (for the previous block's tail)."""
    rope_next: Rope | None
    """RoPE of the frame positions just after the block (for the next block's head)."""


class ContextSelfAttnProcessor:
    """WanAttnProcessor's self-attention, with the neighbours' cached edge K/V appended to K/V."""

    def __init__(self, layer: int, cache: FeatureCache, state: dict) -> None:
        self.layer = layer
        self.cache = cache
        self.state = state  # shared with the adapter: state["current"] is the BlockContext

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        ctx: BlockContext | None = self.state.get("current")
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        keys, values = [], []
        if ctx is not None and ctx.context_tokens:
            self.cache.put(self.layer, ctx.block, key, value, ctx.context_tokens)
            prev = self.cache.previous(self.layer, ctx.block)
            if prev is not None:
                keys.append(apply_rope(prev.key, ctx.rope_prev))
                values.append(prev.value)
        query, key = apply_rope(query, rotary_emb), apply_rope(key, rotary_emb)
        keys.append(key)
        values.append(value)
        if ctx is not None and ctx.context_tokens:
            following = self.cache.following(self.layer, ctx.block)
            if following is not None:
                keys.append(apply_rope(following.key, ctx.rope_next))
                values.append(following.value)
        out = dispatch_attention_fn(
            query,
            torch.cat(keys, dim=1),
            torch.cat(values, dim=1),
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
        )
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


@dataclass
class Conditions:
    """Per-timestep inputs of every transformer block, computed locally on each stage."""

    temb: torch.Tensor
    """Time embedding (the head's modulation)."""
    timestep_proj: torch.Tensor
    """[B, 6, dim] adaLN modulation of the blocks."""
    text: torch.Tensor
    """Projected text embeddings for cross-attention."""


class WanFrameAdapter:
    """A WanTransformer3DModel run piecewise on frame blocks of a fixed latent shape [C, F, H, W]."""

    def __init__(
        self, model: WanTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int
    ):
        if not isinstance(model, WanTransformer3DModel):
            raise TypeError(
                f"model: the frame pipeline drives WanTransformer3DModel, got {type(model).__name__}"
            )
        if model.config.image_dim is not None or model.config.added_kv_proj_dim is not None:
            raise ValueError(
                "model: image-conditioned Wan models (I2V) are not supported by the frame pipeline"
            )
        p_t, p_h, p_w = model.config.patch_size
        channels, frames, height, width = block_shape
        if p_t != 1 or height % p_h or width % p_w:
            raise ValueError(
                f"model: patch size {tuple(model.config.patch_size)} does not tile {block_shape}"
            )
        if not 0 <= context_frames <= frames:
            raise ValueError(f"context_frames: must be in [0, block_frames={frames}], got {context_frames}")
        self.model = model
        self.block_shape = block_shape
        self.context_frames = context_frames
        self.tokens_per_frame = (height // p_h) * (width // p_w)
        self.num_layers = len(model.blocks)
        param = next(model.parameters())
        total = frames + 2 * context_frames
        probe = torch.empty(1, channels, total, height, width, device=param.device)
        cos, sin = model.rope(probe)  # only the shape is read
        tpf, own = self.tokens_per_frame, context_frames * self.tokens_per_frame
        self.rope_own = (cos[:, own : own + frames * tpf], sin[:, own : own + frames * tpf])
        self.rope_prev = (cos[:, :own], sin[:, :own])
        self.rope_next = (cos[:, own + frames * tpf :], sin[:, own + frames * tpf :])
        self.cache = FeatureCache()
        self.state: dict = {}
        self._original = [block.attn1.processor for block in model.blocks]
        for layer, block in enumerate(model.blocks):
            block.attn1.set_processor(ContextSelfAttnProcessor(layer, self.cache, self.state))

    def remove(self) -> None:
        """Give the model its own attention processors back."""
        for block, processor in zip(self.model.blocks, self._original):
            block.attn1.set_processor(processor if processor is not None else WanAttnProcessor())

    def embed(self, latent: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, tokens, dim] hidden states (the model's patch embedding)."""
        hidden = self.model.patch_embedding(latent.to(self.model.patch_embedding.weight.dtype))
        return hidden.flatten(2).transpose(1, 2).contiguous()

    def conditions(self, timestep: torch.Tensor, text: torch.Tensor) -> Conditions:
        # the model's dtype: diffusers' embedder casts the time embedding to the text's dtype, and a
        # float32 text encoder beside a bfloat16 transformer would otherwise meet bf16 weights in fp32
        text = text.to(self.model.patch_embedding.weight.dtype)
        temb, proj, text, _ = self.model.condition_embedder(timestep.reshape(-1), text, None)
        return Conditions(temb, proj.unflatten(1, (6, -1)), text)

    def begin_block(self, block: int | None) -> None:
        """Tell the patched self-attention which frame block the next layers see (None: no block, so no
        feature cache traffic)."""
        if block is None:
            self.state["current"] = None
            return
        tokens = self.context_frames * self.tokens_per_frame
        self.state["current"] = BlockContext(block, tokens, self.rope_prev, self.rope_next)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        return self.model.blocks[layer](hidden, cond.text, cond.timestep_proj, self.rope_own)

    def head(self, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output (output norm, projection, unpatchify)."""
        model = self.model
        shift, scale = (model.scale_shift_table + cond.temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (model.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = model.proj_out(hidden)
        _, frames, height, width = self.block_shape
        p_t, p_h, p_w = model.config.patch_size
        batch = hidden.shape[0]
        hidden = hidden.reshape(batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
        return hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def hidden_shape(self, batch: int = 1, cond: Conditions | None = None) -> tuple[int, int, int]:
        _, frames, _, _ = self.block_shape
        return (
            batch,
            frames * self.tokens_per_frame,
            self.model.config.num_attention_heads * self.model.config.attention_head_dim,
        )
