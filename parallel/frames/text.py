"""The encoded prompt the frame pipeline carries: one tensor, or a family's dict of batch-first tensors.

A Wan-layout model takes its prompt as one tensor [1, L, D]; other video families condition on several
tensors (prompt embeddings with their attention mask, pooled projections...). The frame pipeline does not
look inside: it batches the negative prompt's entries first along dim 0 (classifier-free guidance), moves
every entry to the model's device, casts floating-point entries to the model's dtype (integer and boolean
masks keep theirs) and hands the result to the adapter's ``conditions`` as it is.
"""

from __future__ import annotations

import torch

Text = torch.Tensor | dict[str, torch.Tensor]
"""An encoded prompt: one batch-first tensor, or named batch-first tensors."""


def _entries(text: Text) -> dict[str, torch.Tensor]:
    return text if isinstance(text, dict) else {"text": text}


def text_batch(text: Text) -> int:
    """Rows of the encoded prompt (2 when both guidance branches are batched)."""
    return next(iter(_entries(text).values())).shape[0]


def check_negative(text: Text, negative: Text) -> None:
    """The negative prompt must be encoded like the prompt: the same entries, each of the same shape."""
    positive, other = _entries(text), _entries(negative)
    if isinstance(text, dict) != isinstance(negative, dict) or positive.keys() != other.keys():
        raise ValueError(
            f"negative_text: its entries {sorted(other)} differ from the prompt's {sorted(positive)}"
        )
    for key, value in positive.items():
        if other[key].shape != value.shape:
            name = "" if not isinstance(text, dict) else f" {key!r}"
            raise ValueError(
                f"negative_text:{name} shape {tuple(other[key].shape)} differs from the prompt's "
                f"{tuple(value.shape)}; encode both to the same length"
            )


def batch_guided(text: Text, negative: Text) -> Text:
    """Both branches in one batch, negative first, as diffusers batches them."""
    if isinstance(text, dict):
        return {key: torch.cat([negative[key], value]) for key, value in text.items()}
    return torch.cat([negative, text])


def one_branch(text: Text, conditional: bool) -> Text:
    """One guidance branch of a ``batch_guided`` prompt (CFG parallel runs each on its own workers)."""
    row = 1 if conditional else 0  # negative first
    if isinstance(text, dict):
        return {key: value[row : row + 1] for key, value in text.items()}
    return text[row : row + 1]


def to_model(text: Text, device: torch.device, dtype: torch.dtype) -> Text:
    """On the model's device; floating-point entries in its dtype, integer and boolean ones as they are."""

    def move(value: torch.Tensor) -> torch.Tensor:
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)

    if isinstance(text, dict):
        return {key: move(value) for key, value in text.items()}
    return move(text)
