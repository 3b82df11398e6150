"""The Sana family's patch plan: diffusers' ``SanaTransformer2DModel`` on row bands of the latent.

A band of latent rows (a multiple of ``patch_size`` high) is a run of whole patch rows, a contiguous run of
the token sequence. What makes a band's output exact:

- the patch embedding adds the full grid's sin-cos positions for the band's rows, when the model has any
  (``interpolation_scale`` set; ``parallel.patch.embed``);
- self-attention (``attn1``) is ReLU linear attention (``SanaLinearAttnProcessor2_0``): each band computes its
  per-head state (``V^T K`` and the sum of ``K``) and the bands all-reduce it, exchanging no K/V, so its bytes
  do not grow with the image (``parallel.patch.linear_attention``); ``SanaBandLinearAttnProcessor`` below is
  diffusers' processor step by step around that sum;
- the feed-forward (``GLUMBConv``) runs a 3x3 depthwise conv over the token grid: a plain ``Conv2d`` that
  the generic mechanics give its neighbours' halo rows (``parallel.patch.conv``);
- cross-attention (``attn2``, text tokens), the adaLN modulation, the norms, ``proj_out`` and the unpatchify
  are per token, hence local.

Displaced mode: the halos and the other bands' attention states are the previous step's (this band's own
state is fresh), sent asynchronously while the step computes; ``kv_source`` does not apply (no K/V moves).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import SanaTransformer2DModel
from diffusers.models.attention_processor import Attention, SanaLinearAttnProcessor2_0
from diffusers.models.embeddings import PatchEmbed
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.embed import patch_patch_embed
from parallel.patch.linear_attention import KIND, band_linear_attention
from parallel.patch.parallelize import PatchPlan, parallelize_patch
from parallel.patch.runtime import PatchHandle, PatchRuntime
from parallel.patch.swap import install_processor


class SanaBandLinearAttnProcessor:
    """diffusers' ``SanaLinearAttnProcessor2_0`` for ``attn1`` on a band of tokens, its state summed over the
    bands; every other step is the same operation in the same order."""

    def __init__(self, rt: PatchRuntime, layer: int):
        self.rt = rt
        self.key = (KIND, layer)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise NotImplementedError("SanaBandLinearAttnProcessor is for self-attention (no encoder_hidden_states)")
        original_dtype = hidden_states.dtype  # attention_mask is ignored, as diffusers' processor ignores it

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        query = query.transpose(1, 2).unflatten(1, (attn.heads, -1))
        key = key.transpose(1, 2).unflatten(1, (attn.heads, -1)).transpose(2, 3)
        value = value.transpose(1, 2).unflatten(1, (attn.heads, -1))
        query = F.relu(query)
        key = F.relu(key)
        query, key, value = query.float(), key.float(), value.float()

        hidden_states = band_linear_attention(self.rt, self.key, query, key, value)
        hidden_states = hidden_states.flatten(1, 2).transpose(1, 2)
        hidden_states = hidden_states.to(original_dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if original_dtype == torch.float16:
            hidden_states = hidden_states.clip(-65504, 65504)
        return hidden_states


def patch_sana_attention(attn: Attention, rt: PatchRuntime) -> Callable[[], None]:
    """Give a self-attention its band processor; cross-attention (text tokens) stays as it is."""
    if attn.is_cross_attention:
        return lambda: None
    old = attn.processor
    if not isinstance(old, SanaLinearAttnProcessor2_0):
        raise NotImplementedError(
            f"the Sana patch plan runs self-attention with SanaLinearAttnProcessor2_0; this one has "
            f"{type(old).__name__}"
        )
    return install_processor(attn, SanaBandLinearAttnProcessor(rt, rt.new_layer_id()))


def sana_patch_plan(transformer: nn.Module) -> PatchPlan:
    """Row bands for a ``SanaTransformer2DModel``: bands of whole patch rows."""
    if not isinstance(transformer, SanaTransformer2DModel):
        raise TypeError(f"transformer: expected a SanaTransformer2DModel, got {type(transformer).__name__}")
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        special={PatchEmbed: patch_patch_embed, Attention: patch_sana_attention},
    )


def parallelize_sana_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a ``SanaTransformer2DModel`` run on row bands of the latent over ``group``. Works in place.

    Call with the same config on every rank, then run the usual forward on each rank's band
    (``hidden_states`` = the band, conditioning unchanged). Band heights must be multiples of ``patch_size``
    except the last, which must still be whole patches.
    """
    return parallelize_patch(transformer, group, sana_patch_plan(transformer), config)
