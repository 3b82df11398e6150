"""The HunyuanVideo family's sequence plan: Ulysses over the joint attention, written here because diffusers has none.

diffusers 0.42 ships no ``_cp_plan`` for ``HunyuanVideoTransformer3DModel``, and its context parallelism could not
take one as the model stands: the forward builds the [video; text] key mask from the video length it sees, and
an all-to-all over [video share; whole prompt] would put the prompt's keys in the joint softmax once per worker.
So this plan splits only the video, as the band plan does (``patch``: a band of latent rows of every frame per
worker, the whole grid's rotary table cut to the band, ``patch.patch_hunyuan_rope``), and changes only the
attention of the dual- and single-stream blocks: ``parallel.patch.ulysses`` exchanges the band's Q/K/V by heads
and the outputs back, the prompt cut to each worker's heads, attending with the model's own key mask on the
prompt. Exact like sync bands: no displaced mode. The heads must divide by the workers (checked at submit,
``parallel.degree``).
"""

from __future__ import annotations

import functools

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan
from parallel.patch.runtime import PatchRuntime
from parallel.patch.ulysses import ulysses_joint_attention, ulysses_plan
from pipelines.families.hunyuanvideo.frames import joint_outputs
from pipelines.families.hunyuanvideo.patch import (
    BAND_TOKENS,
    check_hunyuan_input,
    check_hunyuan_model,
    joint_key_mask,
    patch_hunyuan_layers,
    rotated_projections,
)


class HunyuanUlyssesJointAttnProcessor:
    """``HunyuanVideoAttnProcessor2_0`` on a band of video tokens, Ulysses over the workers' heads."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        self.rt = rt
        self.tags = (2 * layer, 2 * layer + 1)  # Q/K/V out, outputs back

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        video_tokens, text_tokens = hidden_states.shape[1], encoder_hidden_states.shape[1]
        query, key, value, text_query, text_key, text_value = rotated_projections(
            attn, hidden_states, encoder_hidden_states, image_rotary_emb
        )

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = joint_key_mask(attention_mask, text_tokens, k.shape[1] - text_tokens)
            return dispatch_attention_fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)

        video, text = ulysses_joint_attention(
            self.rt,
            self.tags,
            (query, key, value),
            (text_query, text_key, text_value),
            self.rt.recall(BAND_TOKENS),
            attend,
        )
        return joint_outputs(attn, torch.cat([video, text], dim=1).to(hidden_states.dtype), video_tokens)


def hunyuan_ulysses_plan(transformer: nn.Module, config: PatchConfig, workers: int) -> PatchPlan:
    """The plan ``parallel.patch.parallelize_patch`` applies for ``parallel.strategy=sequence``."""
    check_hunyuan_model(transformer)
    layers = functools.partial(patch_hunyuan_layers, processor=HunyuanUlyssesJointAttnProcessor)
    return ulysses_plan(transformer, config, workers, layers, check_hunyuan_input)
