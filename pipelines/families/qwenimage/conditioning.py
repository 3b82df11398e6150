"""Qwen-Image's prompts in one batch: they are as long as their own tokens, so two branches differ in length.

QwenImagePipeline's ``encode_prompt`` crops each prompt's hidden states to its own tokens (after the template's
system part) and pads nothing for a single prompt, and ``__call__`` runs the two guidance branches as two
forwards. Tessera batches them in one forward (one exchange per layer under patch bands, as for every family):
the shorter branch is padded with zeros and its padding masked (``encoder_hidden_states_mask``), as the pipeline's
own ``_get_qwen_prompt_embeds`` pads a list of prompts. The masked keys get no weight, so each branch equals its
own forward to float rounding; one branch alone (CFG parallel, or no guidance) is passed as encoded.

Sequence parallelism pads the same way (``split_evenly``): the context-parallel plan splits the text between the
workers, so a prompt whose token count they do not divide is padded at its end with masked zeros. That is exact
in diffusers 0.42's QwenImageTransformer2DModel: the mask keeps every query (text or image) off the padded keys;
the text's rotary positions run from the image's largest index up, so the prompt's own tokens keep theirs and the
padding takes the next ones; a padded token's own row (norms, modulation, MLP are per token) reaches no other
token, and only the image tokens come out. Ulysses gathers the mask with the keys, so it holds there; Ring cannot
take it (see ``split_evenly``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from pipelines.families.base import Conditioning

EMBEDS = "encoder_hidden_states"
MASK = "encoder_hidden_states_mask"


RING_MASK = (
    "diffusers 0.42's Ring attention takes no attention mask (its _native_flash backend refuses one, and its loop "
    "would apply each worker's own mask to the key/value shards passed around)"
)
"""Why a masked Qwen-Image text cannot run under Ring attention exactly."""


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

    def split_evenly(self, workers: int, apart: bool) -> tuple[QwenConditioning, str | None]:
        """Each branch's text padded (masked zeros at its end) to a multiple of ``workers``, and why Ring could not
        run the result exactly: when a forward carries a mask (a padded branch, or, batched, two branches of unequal
        length), which Ring cannot take (``RING_MASK``). ``apart``: the branches run on different workers (CFG
        parallel), never batched. Every worker encodes the same prompts, so all decide alike."""
        branches = {"positive": self.positive}
        if self.guided:
            branches["negative"] = self.negative
        padded = {}
        for name, inputs in branches.items():
            own = inputs[EMBEDS].shape[1]
            tokens = math.ceil(own / workers) * workers
            padded[name] = inputs if tokens == own else pad_text(inputs, tokens)
        even = replace(self, **padded)
        forwards = [even.positive, even.negative] if apart else [even.batched()]
        masked = any(inputs[MASK] is not None for inputs in forwards)
        return even, RING_MASK if masked else None
