"""The Wan family's frame plan: WanTransformer3DModel cut into the pieces the frame pipeline runs on its stages.

``WanFrameAdapter`` splits the model's own forward into ``embed`` (patch embedding, stage 0),
``conditions`` (timestep and text embeddings, cheap, recomputed on every stage instead of being
sent), ``run_layer`` (one ``WanTransformerBlock``) and ``head`` (output norm, projection and
unpatchify, last stage); run in sequence they equal ``model(...)``. ``install_context_attention``
swaps each block's self-attention processor for ``ContextSelfAttnProcessor``, which lets a frame
block also attend to its neighbours' edge frames from the ``FeatureCache``.

Wan 2.2's two experts (``pipelines.families.wan.experts.WanExperts``): ``conditions`` picks the expert of the
step's timestep (diffusers' boundary rule) and the step's embedding, layers and head are that expert's; each
expert's self-attention gets the context processor, and both read and fill one feature cache (a neighbour
block may be at a step of the other expert, as it is at another noise level anyway).

Image-to-video (``pipelines.families.wan.image``): the encoded prompt is then a dict, ``text`` (the prompt's
embeddings), ``first`` / ``rest`` (the mask and VAE latent concatenated to a block's channels: block 0 gets
``first``, blocks 1 to m their slices of ``rest``, a later block block m's) and, for Wan 2.1 I2V, ``image`` (CLIP embeddings). ``conditions`` runs
them through the expert's ``condition_embedder`` and puts the projected image tokens before the text, as the
model's forward does; each block's cross-attention is diffusers' own processor, which splits them off again and
attends through its ``add_k_proj``/``add_v_proj`` (``added_kv_proj_dim``).

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
from pipelines.families.wan.experts import WanExperts
from pipelines.families.wan.image import first_frame_at_zero, hold_first_frame

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


class PerBranchCrossAttnProcessor:
    """An image-to-video block's cross-attention (diffusers' own processor) run once per guidance branch.

    WanImageToVideoPipeline calls the model once per branch; the frame pipeline batches both. With image tokens
    before the text, diffusers' processor slices them apart along the tokens, which leaves a batch of 2
    non-contiguous, and a bfloat16 GEMM on a strided input rounds otherwise than on batch 1's contiguous one:
    0.01 after one forward, 0.03 after 2 guided steps on a tiny Wan 2.1 I2V (a text-only model, whose slices
    stay contiguous, matches batched). Branch by branch, the calls are diffusers' own, bit for bit."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if hidden_states.shape[0] == 1:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        return torch.cat(
            [
                self.inner(attn, hidden_states[i : i + 1], encoder_hidden_states[i : i + 1], attention_mask, rotary_emb)
                for i in range(hidden_states.shape[0])
            ]
        )


@dataclass
class Conditions:
    """Per-timestep inputs of every transformer block, computed locally on each stage."""

    temb: torch.Tensor
    """Time embedding (the head's modulation)."""
    timestep_proj: torch.Tensor
    """[B, 6, dim] adaLN modulation of the blocks."""
    text: torch.Tensor
    """Projected text embeddings for cross-attention (the projected image tokens first, for Wan 2.1 I2V)."""
    expert: WanTransformer3DModel | None = None
    """The transformer of this step (a two-expert pipeline's expert of its timestep); None: the adapter's model."""
    frame_condition: tuple[torch.Tensor, torch.Tensor] | None = None
    """Image-to-video: block 0's [B, 4 + z_dim, F, H, W] channels appended to the latent, and blocks 1 to m's
    [B, 4 + z_dim, m * F, H, W] (a block after m takes block m's; ``pipelines.families.wan.image``)."""
    first_latent: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """TI2V image-to-video (``expand_timesteps``): the image's [B, z_dim, 1, H, W] latent, which block 0's first
    latent frame is held at, and block 0's per-token time embedding [B, tokens, dim] and modulation
    [B, tokens, 6, dim], that frame's tokens at timestep 0 (``WanImageToVideoPipeline``'s ``first_frame_mask``)."""


class WanFrameAdapter:
    """A WanTransformer3DModel run piecewise on frame blocks of a fixed latent shape [C, F, H, W]."""

    def __init__(
        self, model: WanTransformer3DModel | WanExperts, block_shape: tuple[int, int, int, int], context_frames: int
    ):
        if not isinstance(model, (WanTransformer3DModel, WanExperts)):
            raise TypeError(
                f"model: the frame pipeline drives WanTransformer3DModel, got {type(model).__name__}"
            )
        self.experts = list(model.experts) if isinstance(model, WanExperts) else [model]
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
        self.num_layers = len(self.experts[0].blocks)
        param = next(model.parameters())
        total = frames + 2 * context_frames
        probe = torch.empty(1, channels, total, height, width, device=param.device)
        cos, sin = self.experts[0].rope(probe)  # only the shape is read
        tpf, own = self.tokens_per_frame, context_frames * self.tokens_per_frame
        self.rope_own = (cos[:, own : own + frames * tpf], sin[:, own : own + frames * tpf])
        self.rope_prev = (cos[:, :own], sin[:, :own])
        self.rope_next = (cos[:, own + frames * tpf :], sin[:, own + frames * tpf :])
        self.cache = FeatureCache()
        self.state: dict = {}
        self.first_latent: torch.Tensor | None = None
        """TI2V image-to-video: the image's latent [1, z_dim, 1, H, W] block 0 ends with (``finish_latent``), seen
        by ``conditions``."""
        self._original = [[block.attn1.processor for block in expert.blocks] for expert in self.experts]
        self._original_cross = [[block.attn2.processor for block in expert.blocks] for expert in self.experts]
        for expert in self.experts:
            for layer, block in enumerate(expert.blocks):
                block.attn1.set_processor(ContextSelfAttnProcessor(layer, self.cache, self.state))
                if block.attn2.add_k_proj is not None:  # image tokens beside the text (Wan 2.1 I2V)
                    block.attn2.set_processor(PerBranchCrossAttnProcessor(block.attn2.processor))

    def remove(self) -> None:
        """Give the model its own attention processors back."""
        for expert, original, cross in zip(self.experts, self._original, self._original_cross):
            for block, processor, cross_processor in zip(expert.blocks, original, cross):
                block.attn1.set_processor(processor if processor is not None else WanAttnProcessor())
                block.attn2.set_processor(cross_processor if cross_processor is not None else WanAttnProcessor())

    def _expert(self, cond: Conditions | None) -> WanTransformer3DModel:
        return cond.expert if cond is not None and cond.expert is not None else self.experts[0]

    def embed(self, latent: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, tokens, dim] hidden states (the step's expert's patch embedding); an
        image-to-video block gets its image conditioning appended to its channels first, as diffusers does
        (block 0 the image's, later blocks the zero-mask ones; ``begin_block`` said which block this is)."""
        model = self._expert(cond)
        if self._first_block(cond):  # TI2V image-to-video: the first latent frame is the image's
            latent = hold_first_frame(latent, cond.first_latent[0])
        if cond is not None and cond.frame_condition is not None:
            current = self.state.get("current")
            block = 0 if current is None else current.block
            first, rest = cond.frame_condition
            if block == 0:
                condition = first
            else:
                frames = first.shape[2]
                start = (min(block, rest.shape[2] // frames) - 1) * frames
                condition = rest[:, :, start : start + frames]
            latent = torch.cat([latent, condition], dim=1)
        hidden = model.patch_embedding(latent.to(model.patch_embedding.weight.dtype))
        return hidden.flatten(2).transpose(1, 2).contiguous()

    def conditions(self, timestep: torch.Tensor, text: torch.Tensor | dict[str, torch.Tensor]) -> Conditions:
        """The step's expert, its time and text (and image) embeddings through that expert's
        ``condition_embedder``; ``text`` one tensor, or the image-to-video dict (module docstring)."""
        model = self.model.expert(timestep) if isinstance(self.model, WanExperts) else self.model
        entries = text if isinstance(text, dict) else {"text": text}
        # the model's dtype: diffusers' embedder casts the time embedding to the text's dtype, and a
        # float32 text encoder beside a bfloat16 transformer would otherwise meet bf16 weights in fp32
        dtype = model.patch_embedding.weight.dtype
        image = entries.get("image")
        temb, proj, prompt, image = model.condition_embedder(
            timestep.reshape(-1), entries["text"].to(dtype), None if image is None else image.to(dtype)
        )
        if image is not None:
            prompt = torch.concat([image, prompt], dim=1)  # as the model's forward: image tokens first
        frames = (entries["first"], entries["rest"]) if "first" in entries else None
        first_latent = None
        if "first_latent" in entries:  # TI2V image-to-video: block 0's tokens of its first frame at timestep 0
            batch, tokens = prompt.shape[0], self.block_shape[1] * self.tokens_per_frame
            step = timestep.reshape(-1)[:1].expand(batch)
            per_token = first_frame_at_zero(step, (batch, *self.block_shape), model.config.patch_size)
            temb0, proj0, _, _ = model.condition_embedder(
                per_token.flatten(), entries["text"].to(dtype), None, timestep_seq_len=tokens
            )
            first_latent = (entries["first_latent"], temb0, proj0.unflatten(2, (6, -1)))
            self.first_latent = entries["first_latent"][:1]
        return Conditions(temb, proj.unflatten(1, (6, -1)), prompt, model, frames, first_latent)

    def _first_block(self, cond: Conditions | None) -> bool:
        """Whether the layers now run block 0 of a TI2V image-to-video render (``Conditions.first_latent``)."""
        current = self.state.get("current")
        return cond is not None and cond.first_latent is not None and current is not None and current.block == 0

    def finish_latent(self, block: int, latent: torch.Tensor) -> torch.Tensor:
        """A block's latent after its last step: block 0 of a TI2V image-to-video render with its first latent frame
        the image's, as ``WanImageToVideoPipeline`` ends (the frame's own steps fed nothing: the model's input held
        it at the image's)."""
        if block != 0 or self.first_latent is None:
            return latent
        return hold_first_frame(latent, self.first_latent)

    def begin_block(self, block: int | None) -> None:
        """Tell the patched self-attention (and ``embed``) which frame block the next layers see (None: no
        block, so no feature cache traffic)."""
        if block is None:
            self.state["current"] = None
            return
        tokens = self.context_frames * self.tokens_per_frame
        self.state["current"] = BlockContext(block, tokens, self.rope_prev, self.rope_next)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        modulation = cond.first_latent[2] if self._first_block(cond) else cond.timestep_proj
        return self._expert(cond).blocks[layer](hidden, cond.text, modulation, self.rope_own)

    def head(self, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output (output norm, projection, unpatchify)."""
        model = self._expert(cond)
        if self._first_block(cond):  # per-token modulation, as the model's forward does for a [B, tokens] timestep
            shift, scale = (model.scale_shift_table.unsqueeze(0) + cond.first_latent[1].unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
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
