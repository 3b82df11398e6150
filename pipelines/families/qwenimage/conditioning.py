"""Qwen-Image's prompts in one batch: they are as long as their own tokens, so two branches differ in length.

QwenImagePipeline's ``encode_prompt`` crops each prompt's hidden states to its own tokens (after the template's
system part) and pads nothing for a single prompt, and ``__call__`` runs the two guidance branches as two
forwards. Tessera batches them in one forward (one exchange per layer under patch bands, as for every family):
the shorter branch is padded with zeros and its padding masked (``encoder_hidden_states_mask``), as the pipeline's
own ``_get_qwen_prompt_embeds`` pads a list of prompts. The masked keys get no weight, so each branch equals its
own forward to float rounding; one branch alone (CFG parallel, or no guidance) is passed as encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipelines.families.base import Conditioning

EMBEDS = "encoder_hidden_states"
MASK = "encoder_hidden_states_mask"


def pad_text(inputs: dict[str, Any], tokens: int) -> dict[str, Any]:
    """One branch's text padded with zeros to ``tokens``, with the mask saying which are its own."""
    embeds, mask = inputs[EMBEDS], inputs[MASK]
    batch, own, width = embeds.shape
    if mask is None:
        mask = torch.ones(batch, own, dtype=torch.long, device=embeds.device)
    padding = tokens - own
    return {
        **inputs,
        EMBEDS: torch.cat([embeds, embeds.new_zeros(batch, padding, width)], dim=1),
        MASK: torch.cat([mask, mask.new_zeros(batch, padding)], dim=1),
    }


@dataclass
class QwenConditioning(Conditioning):
    """A Qwen-Image prompt's conditioning; its two branches batch with the shorter text padded and masked."""

    def batched(self) -> dict[str, Any]:
        if not self.guided:
            return self.positive
        negative, positive = self.negative, self.positive
        same = negative[EMBEDS].shape[1] == positive[EMBEDS].shape[1]
        if same and negative[MASK] is None and positive[MASK] is None:
            return super().batched()
        tokens = max(negative[EMBEDS].shape[1], positive[EMBEDS].shape[1])
        negative, positive = pad_text(negative, tokens), pad_text(positive, tokens)
        return {key: torch.cat([negative[key], value]) for key, value in positive.items()}
