"""The LTX-Video family's frame plan: LTXVideoTransformer3DModel cut into the pieces the frame pipeline runs.

``LTXFrameAdapter`` calls the model's own modules piecewise, in the order of its ``forward``:

- ``embed``: the [B, C, F, H, W] block latent packed into LTX's tokens (``LTXPipeline._pack_latents``, the
  pipeline's own packing, with the transformer's patch sizes) and ``proj_in``;
- ``conditions``: what LTX's blocks take per timestep, which is not a per-token input as in Wan: the AdaLN
  time embedding (``time_embed``, whose ``temb`` every block adds to its ``scale_shift_table`` for its shift,
  scale and gate, and whose embedded timestep is the head's modulation), the caption projection and the
  prompt's attention mask as the additive bias ``forward`` makes of it. The frame pipeline recomputes it on
  every stage from the block's timestep, so blocks at different noise levels each get their own modulation;
- ``run_layer``: one ``LTXVideoTransformerBlock``;
- ``head``: ``norm_out`` modulated by the model's ``scale_shift_table``, ``proj_out`` and the pipeline's
  ``_unpack_latents``.

Run in sequence they equal ``model(...)`` on one block. The rotary embedding is the model's own ``rope``
module: a block's own frames take the positions the model gives a video of one block (0..F-1), the previous
block's last frames the ones just before (negative) and the next block's first frames the ones just after,
so the offsets the (relative) rotary embedding encodes are the true ones across a border, and a video of one
block runs exactly as ``model(...)`` does whatever the context.
``ContextSelfAttnProcessor`` replaces each block's self-attention processor: LTX's attention (q/k RMS norm
across heads, rotary embedding on the flat [B, tokens, heads x head_dim] projections) with the neighbours'
cached edge K/V (normed, before the rotary embedding) appended to K/V.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import LTXPipeline, LTXVideoTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor, apply_rotary_emb

from parallel.frames.cache import FeatureCache

Rope = tuple[torch.Tensor, torch.Tensor]

LTX_ROPE_SCALE = (8 / 25, 32, 32)
"""LTXPipeline's ``rope_interpolation_scale`` for LTX-Video's VAE (8 frames, 32 pixels per latent) at 25 fps."""


def rope_scale(model: torch.nn.Module, frame_rate: float | None = None) -> tuple[float, float, float]:
    """The ``rope_interpolation_scale`` ``LTXPipeline.__call__`` gives this transformer: its VAE's frames per latent
    frame over the call's ``frame_rate`` (None: its default) and pixels per latent pixel, as
    ``loading.load_ltx_pipeline`` records them on the model (the transformer alone does not know its VAE);
    LTX-Video's own VAE's and 25 for a model loaded otherwise (``LTX_ROPE_SCALE``)."""
    temporal, spatial = getattr(model, "tessera_vae_compression", (8, 32))
    rate = getattr(model, "tessera_frame_rate", 25) if frame_rate is None else frame_rate
    return (temporal / rate, spatial, spatial)


@dataclass
class BlockContext:
    """What the patched self-attention needs to know about the frame block passing through it."""

    block: int
    """Index of the frame block in the video."""
    context_tokens: int
    """Tokens in ``context_frames`` frames (0: blocks attend only to themselves)."""
    rope_prev: Rope
    """Rotary embedding of the positions just before the block (for the previous block's tail)."""
    rope_next: Rope
    """Rotary embedding of the positions just after the block (for the next block's head)."""


class ContextSelfAttnProcessor:
    """LTXVideoAttnProcessor's self-attention, with the neighbours' cached edge K/V appended to K/V."""

    def __init__(self, layer: int, cache: FeatureCache, state: dict) -> None:
        self.layer = layer
        self.cache = cache
        self.state = state  # shared with the adapter: state["current"] is the BlockContext

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None
    ):
        ctx: BlockContext | None = self.state.get("current")
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        keys, values = [], []
        context = ctx is not None and ctx.context_tokens > 0
        if context:
            self.cache.put(self.layer, ctx.block, key, value, ctx.context_tokens)
            prev = self.cache.previous(self.layer, ctx.block)
            if prev is not None:
                keys.append(apply_rotary_emb(prev.key, ctx.rope_prev))
                values.append(prev.value)
        query = apply_rotary_emb(query, image_rotary_emb)
        keys.append(apply_rotary_emb(key, image_rotary_emb))
        values.append(value)
        if context:
            following = self.cache.following(self.layer, ctx.block)
            if following is not None:
                keys.append(apply_rotary_emb(following.key, ctx.rope_next))
                values.append(following.value)
        out = dispatch_attention_fn(
            query.unflatten(2, (attn.heads, -1)),
            torch.cat(keys, dim=1).unflatten(2, (attn.heads, -1)),
            torch.cat(values, dim=1).unflatten(2, (attn.heads, -1)),
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
        )
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


@dataclass
class Conditions:
    """Per-timestep inputs of every transformer block, computed locally on each stage."""

    temb: torch.Tensor
    """[B, 1, 6 x dim] AdaLN modulation of the blocks (shift, scale, gate of attention and feed-forward)."""
    embedded_timestep: torch.Tensor
    """[B, 1, dim] the timestep embedding that modulates the head."""
    text: torch.Tensor
    """[B, L, dim] projected prompt embeddings for cross-attention."""
    mask: torch.Tensor | None
    """[B, 1, L] additive cross-attention bias from the prompt's attention mask."""


class LTXFrameAdapter:
    """An LTXVideoTransformer3DModel run piecewise on frame blocks of a fixed latent shape [C, F, H, W]."""

    output_dtype = torch.float32
    """``head`` upcasts the noise prediction, as ``LTXPipeline.__call__`` does before guidance and its step."""

    def __init__(
        self,
        model: LTXVideoTransformer3DModel,
        block_shape: tuple[int, int, int, int],
        context_frames: int,
        rope_interpolation_scale: tuple[float, float, float] = LTX_ROPE_SCALE,
    ) -> None:
        if not isinstance(model, LTXVideoTransformer3DModel):
            raise TypeError(
                f"model: the LTX frame plan drives LTXVideoTransformer3DModel, got {type(model).__name__}"
            )
        p, p_t = model.config.patch_size, model.config.patch_size_t
        if (p, p_t) != (1, 1):
            # LTXPipeline passes the latent's frames/rows/columns to the rotary embedding, which covers the
            # tokens only when every token is one latent pixel: other patch sizes do not run in diffusers either
            raise ValueError(f"model: LTXPipeline runs patch sizes (1, 1), got ({p}, {p_t})")
        channels, frames, height, width = block_shape
        if not 0 <= context_frames <= frames:
            raise ValueError(f"context_frames: must be in [0, block_frames={frames}], got {context_frames}")
        self.model = model
        self.block_shape = block_shape
        self.context_frames = context_frames
        self.tokens_per_frame = height * width
        self.num_layers = len(model.transformer_blocks)
        self.rope_own = self._rope(model, frames, height, width, rope_interpolation_scale)
        self.rope_prev, self.rope_next = self._neighbour_rope(
            model, frames, height, width, context_frames, rope_interpolation_scale
        )
        self.cache = FeatureCache()
        self.state: dict = {}
        self._original = [block.attn1.processor for block in model.transformer_blocks]
        for layer, block in enumerate(model.transformer_blocks):
            block.attn1.set_processor(ContextSelfAttnProcessor(layer, self.cache, self.state))

    @staticmethod
    def _rope(model, frames: int, height: int, width: int, scale: tuple[float, float, float]) -> Rope:
        """The rotary embedding ``forward`` gives a video of one block: a block's own frames sit where the model
        puts a video of that size (so one block is exactly ``model(...)``)."""
        probe = torch.empty(1, 1, device=next(model.parameters()).device)  # rope reads batch size and device
        return model.rope(probe, frames, height, width, rope_interpolation_scale=scale)

    def _neighbour_rope(
        self, model, frames: int, height: int, width: int, context: int, scale: tuple[float, float, float]
    ) -> tuple[Rope, Rope]:
        """The rotary embedding of the ``context`` frames just before the block (frame positions -context..-1)
        and just after it (frames..frames+context-1), through the rope module's ``video_coords``: the
        coordinates ``_prepare_video_coords`` would make, scaled alike, for frames outside [0, frames)."""
        device = next(model.parameters()).device
        grid = torch.meshgrid(
            torch.arange(-context, frames + context, dtype=torch.float32, device=device),
            torch.arange(height, dtype=torch.float32, device=device),
            torch.arange(width, dtype=torch.float32, device=device),
            indexing="ij",
        )
        rope = model.rope
        coords = torch.stack(
            [
                grid[0] * scale[0] * rope.patch_size_t,
                grid[1] * scale[1] * rope.patch_size,
                grid[2] * scale[2] * rope.patch_size,
            ]
        )
        cos, sin = rope(coords[:1], video_coords=coords.flatten(1).unsqueeze(0))
        ctx, end = context * self.tokens_per_frame, (context + frames) * self.tokens_per_frame
        return (cos[:, :ctx], sin[:, :ctx]), (cos[:, end:], sin[:, end:])

    def remove(self) -> None:
        """Give the model its own attention processors back."""
        for block, processor in zip(self.model.transformer_blocks, self._original):
            block.attn1.set_processor(processor if processor is not None else LTXVideoAttnProcessor())

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.proj_in.weight.dtype

    def embed(self, latent: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, tokens, dim] hidden states (LTX's packing and ``proj_in``)."""
        packed = LTXPipeline._pack_latents(
            latent, self.model.config.patch_size, self.model.config.patch_size_t
        )
        if packed.shape[0] > 1:  # both guidance branches: laid out as LTXPipeline's torch.cat of packed latents
            packed = packed.contiguous()  # (bfloat16 GEMMs on CPU round by layout: bit-equal to diffusers so)
        return self.model.proj_in(packed.to(self._dtype))

    def conditions(self, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> Conditions:
        """The blocks' modulation for ``timestep`` and the projected prompt; ``text`` is the encoded prompt
        (``prompt_embeds`` [B, L, D] and ``prompt_attention_mask`` [B, L]), both branches batched under CFG."""
        model, dtype = self.model, self._dtype
        embeds = text["prompt_embeds"].to(dtype)
        batch = embeds.shape[0]
        timestep = timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep.reshape(-1)
        temb, embedded = model.time_embed(timestep, batch_size=batch, hidden_dtype=dtype)
        mask = text.get("prompt_attention_mask")
        if mask is not None and mask.ndim == 2:  # as forward turns it into an additive bias
            mask = ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
        caption = model.caption_projection(embeds).view(batch, -1, temb.shape[-1] // 6)
        return Conditions(
            temb.view(batch, -1, temb.shape[-1]), embedded.view(batch, -1, embedded.shape[-1]), caption, mask
        )

    def begin_block(self, block: int | None) -> None:
        """Tell the patched self-attention which frame block the next layers see (None: no block, so no
        feature cache traffic)."""
        if block is None:
            self.state["current"] = None
            return
        tokens = self.context_frames * self.tokens_per_frame
        self.state["current"] = BlockContext(block, tokens, self.rope_prev, self.rope_next)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        return self.model.transformer_blocks[layer](
            hidden_states=hidden,
            encoder_hidden_states=cond.text,
            temb=cond.temb,
            image_rotary_emb=self.rope_own,
            encoder_attention_mask=cond.mask,
        )

    def head(self, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output (modulated ``norm_out``, ``proj_out``, unpacking)."""
        model = self.model
        shift, scale = (model.scale_shift_table[None, None] + cond.embedded_timestep[:, :, None]).unbind(2)
        hidden = model.proj_out(model.norm_out(hidden) * (1 + scale) + shift)
        _, frames, height, width = self.block_shape
        return LTXPipeline._unpack_latents(hidden, frames, height, width, 1, 1).float()  # noise_pred.float()

    def hidden_shape(self, batch: int = 1, cond: Conditions | None = None) -> tuple[int, int, int]:
        _, frames, _, _ = self.block_shape
        config = self.model.config
        return (batch, frames * self.tokens_per_frame, config.num_attention_heads * config.attention_head_dim)
