"""The CogVideoX family's frame plan: ``CogVideoXTransformer3DModel`` cut into the pieces the frame pipeline runs.

CogVideoX's blocks run joint attention over text and video tokens and update both (separate adaLN gates, a
shared feed-forward), so the hidden states that travel between stages are ``[text, video]``: ``embed`` is the
model's own ``patch_embed`` (text projection, video patches, and the sincos positions of the 1.0 config) on the
step's text and the block's latent; ``conditions`` is the per-block time embedding ``time_embedding(time_proj(t))``
(every block's adaLN modulation comes from it: CogVideoX takes one timestep per forward, so a block at its own
noise level gets its own modulation by running at its own timestep) with the encoded text and the rotary
embeddings; ``run_layer`` one ``CogVideoXBlock``; ``head`` the final norms, projection and unpatchify. Run in
sequence the pieces equal ``model(...)`` on one block (diffusers' modules are called piecewise, never copied).

``ContextJointAttnProcessor`` replaces each block's ``CogVideoXAttnProcessor2_0``: the same projections, norms and
rotary embedding (diffusers' ``apply_rotary_emb``), with the neighbour blocks' edge video K/V from the
``FeatureCache`` appended to the block's K/V (keys cached before their rotary embedding).

Positions: every block is embedded as a video of one block's length, as ``CogVideoXPipeline`` would embed a video
of that size: the 1.0 config's sincos table is the one ``patch_embed`` builds for ``block_frames`` latent frames
(each block at temporal positions 0..F-1; a neighbour's cached K/V keep the positions of its own block, which is
why sincos models see their context frames at in-block positions), and a block's own tokens take the rotary
embedding of the pipeline's own ``_prepare_rotary_positional_embeddings`` for a video of one block's length
(exactly: the text tokens carry no rotation, so joint attention is not shift-invariant and the block must sit at
positions 0..F-1 as in the pipeline). The neighbours' cached keys are rotated to their true offsets across the
border: the next block's first frames at F.., from the same method for a video of the block plus the context;
the previous block's last frames at -c..-1, the rows of positions c..1 with their temporal sines negated (a
rotation by -p is cos p, -sin p; the temporal part is the first ``attention_head_dim // 4`` channels, as
``get_3d_rotary_pos_embed`` lays them out).

Temporal patch (CogVideoX 1.5, ``patch_size_t=2``): a token covers 2 latent frames, so a block must hold an even
number of latent frames (refused otherwise, naming ``block_frames``) and the context is counted in token frames
(``context_frames`` latent frames rounded up to whole tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from parallel.frames.cache import FeatureCache

Rope = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BlockContext:
    """What the patched attention needs to know about the frame block passing through it."""

    block: int
    """Index of the frame block in the video."""
    context_tokens: int
    """Video tokens of the context frames (0: blocks attend only to themselves)."""
    rope_prev: Rope | None
    """Rotary embedding of the positions just before the block (for the previous block's tail), or None."""
    rope_next: Rope | None
    """Rotary embedding of the positions just after the block (for the next block's head), or None."""


def joint_projections(
    attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of CogVideoX's joint attention over ``[text; video]``, each [B, heads, tokens,
    head_dim], queries and keys normed (no rotary yet), as ``CogVideoXAttnProcessor2_0`` projects them."""
    joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    batch = joint.shape[0]
    query, key, value = attn.to_q(joint), attn.to_k(joint), attn.to_v(joint)
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key, value


class ContextJointAttnProcessor:
    """``CogVideoXAttnProcessor2_0``'s joint attention, with the neighbours' cached edge video K/V appended."""

    def __init__(self, layer: int, cache: FeatureCache, state: dict) -> None:
        self.layer = layer
        self.cache = cache
        self.state = state  # shared with the adapter: state["current"] is the BlockContext

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        ctx: BlockContext | None = self.state.get("current")
        text_tokens = encoder_hidden_states.size(1)
        query, key, value = joint_projections(attn, hidden_states, encoder_hidden_states)
        batch, head_dim = query.shape[0], query.shape[-1]
        previous = following = None
        if ctx is not None and ctx.context_tokens:
            # the cache's layout is [B, tokens, heads, head_dim]; video keys before their rotary embedding
            own_key, own_value = key[:, :, text_tokens:].transpose(1, 2), value[:, :, text_tokens:].transpose(1, 2)
            self.cache.put(self.layer, ctx.block, own_key, own_value, ctx.context_tokens)
            previous = self.cache.previous(self.layer, ctx.block)
            following = self.cache.following(self.layer, ctx.block)
        if image_rotary_emb is not None:
            query = torch.cat([query[:, :, :text_tokens], apply_rotary_emb(query[:, :, text_tokens:], image_rotary_emb)], 2)
            key = torch.cat([key[:, :, :text_tokens], apply_rotary_emb(key[:, :, text_tokens:], image_rotary_emb)], 2)
        keys, values = [key], [value]
        for edge, rope in ((previous, ctx and ctx.rope_prev), (following, ctx and ctx.rope_next)):
            if edge is not None:  # a neighbour's edge frames, rotated to where they sit beside this block
                edge_key = edge.key.transpose(1, 2)
                keys.append(apply_rotary_emb(edge_key, rope) if rope is not None else edge_key)
                values.append(edge.value.transpose(1, 2))
        out = F.scaled_dot_product_attention(
            query, torch.cat(keys, dim=2), torch.cat(values, dim=2), dropout_p=0.0, is_causal=False
        )
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video_out = out.split([text_tokens, out.size(1) - text_tokens], dim=1)
        return video_out, encoder_out


@dataclass
class Conditions:
    """Per-timestep inputs of every transformer block, computed locally on each stage."""

    emb: torch.Tensor
    """[B, time_embed_dim] time embedding: every block's adaLN modulation and the output norm's."""
    text: torch.Tensor
    """[B, L, text_embed_dim] the encoded prompt (both guidance branches batched), projected in ``embed``."""


def rotary_embedding(model: CogVideoXTransformer3DModel, height: int, width: int, frames: int, device) -> Rope:
    """``CogVideoXPipeline._prepare_rotary_positional_embeddings`` for a latent video of ``frames`` x ``height`` x
    ``width`` (the pipeline's method, called with a VAE factor of 1 since the sizes are latent already)."""
    pipe = SimpleNamespace(transformer=model, vae_scale_factor_spatial=1)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(pipe, height, width, frames, device)


class CogVideoXFrameAdapter:
    """A CogVideoXTransformer3DModel run piecewise on frame blocks of a fixed latent shape [C, F, H, W]."""

    output_dtype = torch.float32
    """``head`` upcasts the noise prediction, as ``CogVideoXPipeline.__call__`` does before guidance and its step."""

    def __init__(
        self, model: CogVideoXTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int
    ):
        if not isinstance(model, CogVideoXTransformer3DModel):
            raise TypeError(f"model: the CogVideoX frame plan drives CogVideoXTransformer3DModel, got {type(model).__name__}")
        if model.ofs_embedding is not None:
            raise ValueError("model: image-to-video CogVideoX transformers (ofs_embed_dim) are not supported")
        config = model.config
        p, p_t = config.patch_size, config.patch_size_t or 1
        channels, frames, height, width = block_shape
        if frames % p_t:
            raise ValueError(
                f"block_frames: CogVideoX's temporal patch (patch_size_t={p_t}) needs a multiple of {p_t} latent "
                f"frames per block, got {frames}"
            )
        if height % p or width % p:
            raise ValueError(f"height/width: patch size {p} does not tile the latent {height}x{width}")
        if not 0 <= context_frames <= frames:
            raise ValueError(f"context_frames: must be in [0, block_frames={frames}], got {context_frames}")
        self.model = model
        self.block_shape = block_shape
        self.frame_tokens = (height // p) * (width // p)
        """Tokens of one token frame (``patch_size_t`` latent frames)."""
        self.video_tokens = frames // p_t * self.frame_tokens
        context = -(-context_frames // p_t)  # token frames covering the context
        self.context_tokens = context * self.frame_tokens
        self.num_layers = len(model.transformer_blocks)
        self.rope_own = self.rope_prev = self.rope_next = None
        if config.use_rotary_positional_embeddings:
            device = next(model.parameters()).device
            self.rope_own = rotary_embedding(model, height, width, frames, device)
            if context:
                self.rope_prev, self.rope_next = self._edge_ropes(height, width, frames, context, device)
        self.cache = FeatureCache()
        self.state: dict = {}
        self._original = [block.attn1.processor for block in model.transformer_blocks]
        for layer, block in enumerate(model.transformer_blocks):
            block.attn1.set_processor(ContextJointAttnProcessor(layer, self.cache, self.state))

    def _edge_ropes(self, height: int, width: int, frames: int, context: int, device) -> tuple[Rope, Rope]:
        """The rotary embedding of the ``context`` token frames before the block (positions -context..-1) and after
        it (F..F+context-1), from the pipeline's method for a video of the block plus the context."""
        p_t, tpf = self.model.config.patch_size_t or 1, self.frame_tokens
        cos, sin = rotary_embedding(self.model, height, width, frames + context * p_t, device)
        end = self.video_tokens
        following = (cos[end : end + context * tpf], sin[end : end + context * tpf])
        rows = torch.cat([torch.arange(p * tpf, (p + 1) * tpf) for p in range(context, 0, -1)]).to(cos.device)
        prev_sin = sin[rows].clone()
        prev_sin[:, : self.model.config.attention_head_dim // 4] *= -1  # temporal channels: rotate by -p
        return (cos[rows], prev_sin), following

    def remove(self) -> None:
        """Give the model its own attention processors back."""
        for block, processor in zip(self.model.transformer_blocks, self._original):
            block.attn1.set_processor(processor if processor is not None else CogVideoXAttnProcessor2_0())

    def conditions(self, timestep: torch.Tensor, text: torch.Tensor) -> Conditions:
        """The time embedding as the model's forward computes it (one timestep for the whole block)."""
        model = self.model
        dtype = model.proj_out.weight.dtype
        t_emb = model.time_proj(timestep.reshape(-1).expand(text.shape[0])).to(dtype)
        return Conditions(model.time_embedding(t_emb, None), text.to(dtype))

    def embed(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, text + video tokens, dim]: the model's ``patch_embed`` (text projection,
        patches, positions for a video of one block's length)."""
        latent = latent.transpose(1, 2).to(self.model.proj_out.weight.dtype)  # CogVideoX's [B, F, C, H, W]
        return self.model.embedding_dropout(self.model.patch_embed(cond.text, latent))

    def begin_block(self, block: int | None) -> None:
        """Tell the patched attention which frame block the next layers see (None: no cache traffic)."""
        if block is None:
            self.state["current"] = None
            return
        self.state["current"] = BlockContext(block, self.context_tokens, self.rope_prev, self.rope_next)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        text_tokens = cond.text.shape[1]
        video, text = self.model.transformer_blocks[layer](
            hidden_states=hidden[:, text_tokens:],
            encoder_hidden_states=hidden[:, :text_tokens],
            temb=cond.emb,
            image_rotary_emb=self.rope_own,
        )
        return torch.cat([text, video], dim=1)

    def head(self, hidden: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output (final norms, projection, unpatchify)."""
        model = self.model
        video = model.norm_final(hidden[:, cond.text.shape[1] :])
        video = model.proj_out(model.norm_out(video, temb=cond.emb))
        _, frames, height, width = self.block_shape
        p, p_t = model.config.patch_size, model.config.patch_size_t
        batch = video.shape[0]
        if p_t is None:  # the unpatchify of CogVideoXTransformer3DModel.forward, in our [B, C, F, H, W] layout
            out = video.reshape(batch, frames, height // p, width // p, -1, p, p)
            out = out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        else:
            out = video.reshape(batch, frames // p_t, height // p, width // p, -1, p_t, p, p)
            out = out.permute(0, 1, 5, 4, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(1, 2)
        return out.transpose(1, 2).float().contiguous()  # the pipeline's noise_pred.float()

    def hidden_shape(self, batch: int = 1, cond: Conditions | None = None) -> tuple[int, int, int]:
        if cond is None:
            raise ValueError("cond: CogVideoX's hidden states carry the text tokens; their count comes from it")
        inner = self.model.config.num_attention_heads * self.model.config.attention_head_dim
        return (batch, cond.text.shape[1] + self.video_tokens, inner)
