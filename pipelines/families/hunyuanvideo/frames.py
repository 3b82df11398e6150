"""The HunyuanVideo family's frame plan: HunyuanVideoTransformer3DModel cut into the pieces the frame pipeline runs.

``HunyuanFrameAdapter`` calls diffusers' own modules piecewise, in the order of the model's forward:

- ``conditions`` (every stage, per step): the modulation input ``temb`` (``time_text_embed``: the timestep,
  the embedded guidance and the CLIP pooled projection; each block's AdaLN shift/scale/gate is computed from it
  inside the block, so a frame block at its own noise level gets its own modulation) and the Llama prompt
  tokens through the token refiner (``context_embedder``, itself conditioned on the timestep);
- ``embed`` (stage 0): the patch embedding (``x_embedder``) of the frame block, the step's refined text tokens
  joined after the video tokens: what travels between stages is ``[video tokens, text tokens]`` (diffusers'
  joint order), since both streams change in every block;
- ``run_layer``: the dual-stream blocks (``transformer_blocks``) then the single-stream blocks
  (``single_transformer_blocks``), all counted as layers the stages are cut from;
- ``head`` (last stage): ``norm_out``, ``proj_out`` and the unpatchify of the video tokens.

Attention is joint over video and text tokens. ``ContextJointAttnProcessor`` (diffusers' processor has no way
to take extra keys) projects Q/K/V with the attention module's own layers, leaves the block's first and last
``context_frames`` frames' video K (before RoPE) and V in the ``FeatureCache`` and appends the neighbours' edge
K/V to the keys and values; every query (video and text) attends to them. The text keys keep diffusers' mask
(the first ``sum(prompt_attention_mask)`` text tokens are attended).

RoPE: the text tokens carry no rotary position, so the video-text attention sees absolute frame positions: a
block's own frames keep positions 0 .. F-1, exactly as diffusers embeds a video of one block; the previous
block's tail takes the positions just before (-c .. -1) and the next block's head those just after (F ..
F+c-1), so the temporal offsets across block borders are the true ones, as for Wan (whose text comes in by
cross-attention, so it can shift the whole block instead).

HunyuanVideo's image-to-video variants (``image_condition_type``) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from parallel.frames.cache import FeatureCache

Rope = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BlockContext:
    """What the patched attention needs to know about the frame block passing through it."""

    block: int
    """Index of the frame block in the video."""
    context_tokens: int
    """Video tokens in ``context_frames`` frames (0: blocks attend only to themselves)."""
    rope_prev: Rope
    """RoPE of the frame positions just before the block (for the previous block's tail)."""
    rope_next: Rope
    """RoPE of the frame positions just after the block (for the next block's head)."""


@dataclass
class Conditions:
    """Per-timestep inputs of every block, computed locally on each stage."""

    temb: torch.Tensor
    """[B, dim] time + guidance + pooled text embedding: the blocks' and the head's modulation input."""
    text: torch.Tensor
    """[B, text tokens, dim] the prompt tokens through the token refiner (joined to the video by ``embed``)."""
    text_keys: torch.Tensor
    """[B, text tokens] bool: the text tokens every query attends to (diffusers' joint attention mask)."""


def joint_projections(
    attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The video's and the text's queries, keys and values of HunyuanVideo's joint attention, each [B, tokens,
    heads, head_dim], queries and keys normed (no rotary yet), as ``HunyuanVideoAttnProcessor2_0`` projects them:
    the single-stream blocks' one projection over [video; text] cut again, the dual-stream blocks' text through its
    own projections."""
    video_tokens = hidden_states.shape[1]
    if attn.add_q_proj is None:  # single-stream: one projection over video and text
        joint = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = (proj(joint).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        query, key = attn.norm_q(query), attn.norm_k(key)
        return (
            query[:, :video_tokens], key[:, :video_tokens], value[:, :video_tokens],
            query[:, video_tokens:], key[:, video_tokens:], value[:, video_tokens:],
        )
    query, key, value = (proj(hidden_states).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
    text_query, text_key, text_value = (
        proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
        for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
    )
    return (
        attn.norm_q(query), attn.norm_k(key), value,
        attn.norm_added_q(text_query), attn.norm_added_k(text_key), text_value,
    )


def joint_outputs(attn, out: torch.Tensor, video_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint attention's output [B, video + text tokens, heads, head_dim] -> (video, text) through the
    module's output projections, as ``HunyuanVideoAttnProcessor2_0`` ends (the single-stream blocks have none)."""
    out = out.flatten(2, 3)
    # contiguous: under true CFG (both branches batched) a slice of a batch of 2 is a strided GEMM input, which
    # bfloat16 rounds otherwise than the pipeline's one branch per call (2.3e-2 off it after 3 steps; bit for bit so)
    video, text = out[:, :video_tokens].contiguous(), out[:, video_tokens:].contiguous()
    if getattr(attn, "to_out", None) is not None:
        video = attn.to_out[1](attn.to_out[0](video))
    if getattr(attn, "to_add_out", None) is not None:
        text = attn.to_add_out(text)
    return video, text


class ContextJointAttnProcessor:
    """HunyuanVideo's joint attention (dual- and single-stream), the neighbours' cached edge K/V appended."""

    def __init__(self, layer: int, cache: FeatureCache, state: dict) -> None:
        self.layer = layer
        self.cache = cache
        self.state = state  # shared with the adapter: state["current"] is the BlockContext or None

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        image_rotary_emb: Rope,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx: BlockContext | None = self.state.get("current")
        video_tokens = hidden_states.shape[1]
        query, key, value, text_query, text_key, text_value = joint_projections(
            attn, hidden_states, encoder_hidden_states
        )
        keys, values = [], []
        context = ctx is not None and ctx.context_tokens > 0
        if context:
            self.cache.put(self.layer, ctx.block, key, value, ctx.context_tokens)
            prev = self.cache.previous(self.layer, ctx.block)
            if prev is not None:
                keys.append(apply_rotary_emb(prev.key, ctx.rope_prev, sequence_dim=1))
                values.append(prev.value)
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        keys.append(apply_rotary_emb(key, image_rotary_emb, sequence_dim=1))
        values.append(value)
        if context:
            following = self.cache.following(self.layer, ctx.block)
            if following is not None:
                keys.append(apply_rotary_emb(following.key, ctx.rope_next, sequence_dim=1))
                values.append(following.value)
        video_keys = sum(k.shape[1] for k in keys)
        keys.append(text_key)
        values.append(text_value)
        key_mask = torch.cat(
            [attention_mask.new_ones(attention_mask.shape[0], video_keys), attention_mask], dim=1
        )[:, None, None, :]
        out = dispatch_attention_fn(
            torch.cat([query, text_query], dim=1),
            torch.cat(keys, dim=1),
            torch.cat(values, dim=1),
            attn_mask=key_mask,
            dropout_p=0.0,
            is_causal=False,
        )
        return joint_outputs(attn, out.to(query.dtype), video_tokens)


def _turn_back(cos: torch.Tensor, sin: torch.Tensor, cos0: torch.Tensor, sin0: torch.Tensor) -> Rope:
    """RoPE tables of positions ``p - p0`` from those of ``p`` and ``p0``: cos(a - b), sin(a - b) per column.
    Only the time axis moves: ``p0`` is a frame's first token, whose height and width angles are 0."""
    return cos * cos0 + sin * sin0, sin * cos0 - cos * sin0


class HunyuanFrameAdapter:
    """A HunyuanVideoTransformer3DModel run piecewise on frame blocks of a fixed latent shape [C, F, H, W]."""

    def __init__(
        self, model: HunyuanVideoTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int
    ) -> None:
        if not isinstance(model, HunyuanVideoTransformer3DModel):
            raise TypeError(
                f"model: the HunyuanVideo frame plan drives HunyuanVideoTransformer3DModel, got {type(model).__name__}"
            )
        if model.config.image_condition_type is not None:
            raise ValueError(
                f"model: image-conditioned HunyuanVideo ({model.config.image_condition_type}) is not supported by "
                "the frame pipeline"
            )
        p, p_t = model.config.patch_size, model.config.patch_size_t
        channels, frames, height, width = block_shape
        if frames % p_t or height % p or width % p:
            raise ValueError(f"model: patch size ({p_t}, {p}, {p}) does not tile the block {block_shape}")
        if not 0 <= context_frames <= frames:
            raise ValueError(f"context_frames: must be in [0, block_frames={frames}], got {context_frames}")
        if context_frames % p_t:
            raise ValueError(f"context_frames: must be a multiple of the temporal patch {p_t}, got {context_frames}")
        self.model = model
        self.block_shape = block_shape
        self.context_frames = context_frames
        self.tokens_per_frame = (height // p) * (width // p)
        self.video_tokens = frames // p_t * self.tokens_per_frame
        self.dual_layers = len(model.transformer_blocks)
        self.num_layers = self.dual_layers + len(model.single_transformer_blocks)
        param = next(model.parameters())
        own = context_frames // p_t * self.tokens_per_frame
        # the block's own frames at positions 0 .. F-1, exactly as diffusers embeds a video of one block
        self.rope_own = model.rope(torch.empty(1, channels, frames, height, width, device=param.device))
        # frames F .. F+c-1 (the next block's head) and -c .. -1 (the previous block's tail): the full table
        # of c + F + c frames, turned back by the angles of frame c (its first token: row, column 0)
        cos, sin = model.rope(
            torch.empty(1, channels, frames + 2 * context_frames, height, width, device=param.device)
        )
        cos, sin = _turn_back(cos, sin, cos[own], sin[own])
        self.rope_prev = (cos[:own], sin[:own])
        self.rope_next = (cos[own + self.video_tokens :], sin[own + self.video_tokens :])
        self.context_tokens = own
        self.cache = FeatureCache()
        self.state: dict = {}
        self._attention = [block.attn for block in self.blocks()]
        self._original = [attn.processor for attn in self._attention]
        for layer, attn in enumerate(self._attention):
            attn.set_processor(ContextJointAttnProcessor(layer, self.cache, self.state))

    def blocks(self) -> list[torch.nn.Module]:
        """The layers, dual-stream first."""
        return [*self.model.transformer_blocks, *self.model.single_transformer_blocks]

    def remove(self) -> None:
        """Give the model its own attention processors back."""
        for attn, processor in zip(self._attention, self._original):
            attn.set_processor(processor)

    def embed(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, video + text tokens, dim]: the model's patch embedding, then the step's
        refined text tokens."""
        video = self.model.x_embedder(latent.to(self.model.x_embedder.proj.weight.dtype))
        return torch.cat([video, cond.text.to(video.dtype)], dim=1)

    def conditions(self, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> Conditions:
        """``text``: the pipeline's ``encode_prompt`` outputs by name (``prompt_embeds``, ``prompt_attention_mask``,
        ``pooled_prompt_embeds``) and the embedded ``guidance`` (the pipeline's ``guidance_scale * 1000``), batch
        first; ``timestep`` one value for the whole block."""
        embeds, mask = text["prompt_embeds"], text["prompt_attention_mask"]
        batch = embeds.shape[0]
        # the pipeline passes t.to(latents.dtype), and its flow-match step leaves the latents in the model output's
        # dtype after the first step (whose t, 1000, half precision holds exactly): the model's dtype
        timestep = timestep.reshape(-1).expand(batch).to(self.model.x_embedder.proj.weight.dtype)
        temb, _ = self.model.time_text_embed(timestep, text["pooled_prompt_embeds"], text["guidance"])
        refined = self.model.context_embedder(embeds, timestep, mask)
        valid = torch.arange(mask.shape[1], device=mask.device)[None] < mask.sum(dim=1, dtype=torch.int)[:, None]
        return Conditions(temb, refined, valid)

    def begin_block(self, block: int | None) -> None:
        """Tell the patched attention which frame block the next layers see (None: no feature cache traffic)."""
        if block is None:
            self.state["current"] = None
            return
        self.state["current"] = BlockContext(block, self.context_tokens, self.rope_prev, self.rope_next)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """One dual- or single-stream block on ``[video tokens, text tokens]``."""
        video, text = hidden[:, : self.video_tokens], hidden[:, self.video_tokens :]
        block = self.model.transformer_blocks[layer] if layer < self.dual_layers else (
            self.model.single_transformer_blocks[layer - self.dual_layers]
        )
        video, text = block(video, text, cond.temb, cond.text_keys, self.rope_own)
        return torch.cat([video, text], dim=1)

    def head(self, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output (output norm, projection, unpatchify)."""
        model = self.model
        video = model.proj_out(model.norm_out(hidden[:, : self.video_tokens], cond.temb))
        _, frames, height, width = self.block_shape
        p, p_t = model.config.patch_size, model.config.patch_size_t
        video = video.reshape(video.shape[0], frames // p_t, height // p, width // p, -1, p_t, p, p)
        return video.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def hidden_shape(self, batch: int = 1, cond: Conditions | None = None) -> tuple[int, int, int]:
        """[B, video + text tokens, dim]: what travels between stages (the text length is the prompt's)."""
        if cond is None:
            raise ValueError("cond: HunyuanVideo's hidden states carry the text tokens; pass a step's conditions")
        config = self.model.config
        width = config.num_attention_heads * config.attention_head_dim
        return (batch, self.video_tokens + cond.text.shape[1], width)
