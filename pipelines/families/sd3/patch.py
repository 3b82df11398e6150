"""The SD3 family's patch plan: diffusers' ``SD3Transformer2DModel`` (SD3 / SD3.5 MMDiT) in token bands.

A band of latent rows is a run of whole patch rows, i.e. a contiguous run of the image tokens; the text
(context) tokens are kept whole on every worker. What makes a band's output exact:

- ``PatchEmbed`` adds the full image's positions (cropped from ``pos_embed_max_size``) for the band's rows
  (``parallel.patch.embed``);
- the joint attention (``JointTransformerBlock.attn``, ``JointAttnProcessor2_0`` in diffusers) has queries of
  the band's image tokens and of every text token; its keys and values are every band's image tokens
  (``gather_band_kv``, in band order, so the full image's raster order) followed by the text tokens, the
  full sequence's order, so the attention sums run as on one device, and every worker computes the same
  text outputs;
- SD3.5's second attention of dual-attention blocks (``attn2``, image tokens only) is a plain
  self-attention: the generic band processor (``parallel.patch.attention``) gathers it;
- the adaLN modulations, feed-forwards, context embedder, output norm, ``proj_out`` and the unpatchify are
  per token (the unpatchify takes the band's height from its input), so local.

Displaced mode (DistriFusion): the other bands' image K/V (or inputs) are the previous step's, the text's
and this band's own are fresh.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import PatchEmbed
from torch import nn

from parallel.patch.attention import BandSelfAttnProcessor, patch_self_attention
from parallel.patch.config import PatchConfig
from parallel.patch.embed import patch_patch_embed
from parallel.patch.parallelize import PatchPlan, parallelize_patch
from parallel.patch.runtime import PatchHandle, PatchRuntime
from parallel.patch.swap import install_processor


class JointBandAttnProcessor(BandSelfAttnProcessor):
    """diffusers' ``JointAttnProcessor2_0`` for a band of image tokens beside the whole text.

    Follows it step by step; only the image keys and values are every band's (the generic processor's
    ``gather_tokens``, in band order): exchanged as K and V (after ``norm_k``), or, with
    ``PatchConfig.kv_source="input"``, as the attention's image input, which every band then projects itself.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise NotImplementedError("patch-parallel joint attention does not support an attention mask")
        residual = hidden_states
        batch = hidden_states.shape[0]

        # `sample` projections: this band's queries, every band's keys and values
        query = attn.to_q(hidden_states)
        if self.send_inputs:
            hidden_states = self.gather_tokens(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        inner = key.shape[-1]
        head_dim = inner // attn.heads

        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if not self.send_inputs and self.rt.world > 1:
            kv = torch.cat([key, value], dim=-1).transpose(1, 2).reshape(batch, -1, 2 * inner)
            kv = self.gather_tokens(kv).view(batch, -1, attn.heads, 2 * head_dim).transpose(1, 2)
            key, value = kv.split(head_dim, dim=-1)

        # `context` projections: the whole text, after the image tokens
        if encoder_hidden_states is not None:
            context_query = attn.add_q_proj(encoder_hidden_states).view(batch, -1, attn.heads, head_dim)
            context_key = attn.add_k_proj(encoder_hidden_states).view(batch, -1, attn.heads, head_dim)
            context_value = attn.add_v_proj(encoder_hidden_states).view(batch, -1, attn.heads, head_dim)
            context_query, context_key = context_query.transpose(1, 2), context_key.transpose(1, 2)
            context_value = context_value.transpose(1, 2)
            if attn.norm_added_q is not None:
                context_query = attn.norm_added_q(context_query)
            if attn.norm_added_k is not None:
                context_key = attn.norm_added_k(context_key)
            query = torch.cat([query, context_query], dim=2)
            key = torch.cat([key, context_key], dim=2)
            value = torch.cat([value, context_value], dim=2)

        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = (
                hidden_states[:, : residual.shape[1]],
                hidden_states[:, residual.shape[1] :],
            )
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states


def patch_sd3_attention(attn: Attention, rt: PatchRuntime) -> Callable[[], None]:
    """The joint attention (it has the context projections) gets ``JointBandAttnProcessor``; SD3.5's
    image-only ``attn2`` the generic band self-attention. Returns the function restoring the old processor."""
    if attn.added_kv_proj_dim is None:
        return patch_self_attention(attn, rt)
    return install_processor(attn, JointBandAttnProcessor(rt, rt.new_layer_id()))


def check_sd3_input(args: tuple, kwargs: dict) -> None:
    """Bands take the pipeline's plain call: no ControlNet residuals (full-image tensors), no IP-Adapter."""
    if kwargs.get("block_controlnet_hidden_states") is not None:
        raise NotImplementedError("block_controlnet_hidden_states: ControlNet residuals are not supported on bands")
    if kwargs.get("joint_attention_kwargs"):
        raise NotImplementedError(
            "joint_attention_kwargs: IP-Adapter and other attention arguments are not supported on bands"
        )


def sd3_patch_plan(transformer: nn.Module) -> PatchPlan:
    if not isinstance(transformer, SD3Transformer2DModel):
        raise TypeError(f"transformer: expected an SD3Transformer2DModel, got {type(transformer).__name__}")
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        special={PatchEmbed: patch_patch_embed, Attention: patch_sd3_attention},
        check_input=check_sd3_input,
    )


def parallelize_sd3_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make an ``SD3Transformer2DModel`` run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band
    (``hidden_states`` = rows ``bounds[rank]`` of the latent, text and pooled projections unchanged). Band
    heights must be multiples of ``patch_size`` except the last, which must still be whole patches
    (``band_bounds(H, world, align=patch_size)``). Works in place.
    """
    return parallelize_patch(transformer, group, sd3_patch_plan(transformer), config)
