"""The CogVideoX family's sequence plan: Ulysses over the joint attention, written here because diffusers has none.

diffusers 0.42 ships no ``_cp_plan`` for ``CogVideoXTransformer3DModel``. This plan splits the video as the band
plan does (``patch``: a band of latent rows of every frame per worker; the 1.0 config's sincos positions and the
rotary table cut to the band, ``patch.patch_cogvideox_embed`` and ``CogVideoXBandJointAttnProcessor.band_rope``)
and changes only the ``[text; video]`` attention: ``parallel.patch.ulysses`` exchanges the band's Q/K/V by heads
and the outputs back, the prompt cut to each worker's heads (CogVideoX's attention takes no mask). Exact like sync
bands: no displaced mode. The heads must divide by the workers (checked at submit, ``parallel.degree``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan
from parallel.patch.runtime import PatchRuntime
from parallel.patch.ulysses import ulysses_joint_attention, ulysses_plan
from pipelines.families.cogvideox.patch import (
    BAND_TOKENS,
    CogVideoXBandJointAttnProcessor,
    Rope,
    check_cogvideox_input,
    check_cogvideox_model,
    patch_cogvideox_layers,
)


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``CogVideoXAttnProcessor2_0``'s attention on (B, tokens, heads, head_dim) tensors."""
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dropout_p=0.0, is_causal=False
    )
    return out.transpose(1, 2)


class CogVideoXUlyssesJointAttnProcessor(CogVideoXBandJointAttnProcessor):
    """``CogVideoXAttnProcessor2_0`` on ``[text; band]`` tokens, Ulysses over the workers' heads (the band plan's
    processor, its rotary rows kept, its K/V gather replaced)."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        super().__init__(rt, layer)
        self.tags = (2 * layer, 2 * layer + 1)  # Q/K/V out, outputs back

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
        tokens_first = [x.transpose(1, 2) for x in (query, key, value)]  # (B, tokens, heads, D)
        video, prompt = ulysses_joint_attention(
            self.rt,
            self.tags,
            tuple(x[:, text:] for x in tokens_first),
            tuple(x[:, :text] for x in tokens_first),
            self.rt.recall(BAND_TOKENS),
            _sdpa,
            text_first=True,
        )
        out = torch.cat([prompt, video], dim=1).flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video_out = out.split([text, out.size(1) - text], dim=1)
        return video_out, encoder_out


def cogvideox_ulysses_plan(transformer: nn.Module, config: PatchConfig, workers: int) -> PatchPlan:
    """The plan ``parallel.patch.parallelize_patch`` applies for ``parallel.strategy=sequence``."""
    check_cogvideox_model(transformer)
    layers = functools.partial(patch_cogvideox_layers, processor=CogVideoXUlyssesJointAttnProcessor)
    return ulysses_plan(transformer, config, workers, layers, check_cogvideox_input)
