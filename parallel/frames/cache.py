"""The feature cache of the frame pipeline: each frame block's edge K/V, per transformer layer.

When a block passes a layer's self-attention it leaves the K/V of its first and last
``context_frames`` frames here (K before RoPE, so the reader can place them at its own positions).
A block later attends to its previous block's last frames and its next block's first frames from
this cache, never recomputing them. Each pipeline stage keeps the cache of its own layers only, so
the cache costs no communication. Blocks are processed oldest first within a tick, so a block sees
its previous neighbour's features from the same tick and its next neighbour's from the tick before
(the next block has not run yet): DualParal's arrangement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EdgeKV:
    """K (pre-RoPE) and V of a block's first or last frames at one layer, [B, tokens, heads, head_dim]."""

    key: torch.Tensor
    """Keys before the rotary embedding."""
    value: torch.Tensor
    """Values."""


@dataclass
class FeatureCache:
    """Edge K/V keyed by (layer, block): ``head`` holds first frames, ``tail`` last frames."""

    head: dict[tuple[int, int], EdgeKV] = field(default_factory=dict)
    """First ``context_frames`` frames of each block, read by the previous block."""
    tail: dict[tuple[int, int], EdgeKV] = field(default_factory=dict)
    """Last ``context_frames`` frames of each block, read by the next block."""

    def put(self, layer: int, block: int, key: torch.Tensor, value: torch.Tensor, tokens: int) -> None:
        """Store the first and last ``tokens`` tokens of a block's K/V (sequence on dim 1)."""
        self.head[(layer, block)] = EdgeKV(key[:, :tokens].clone(), value[:, :tokens].clone())
        self.tail[(layer, block)] = EdgeKV(key[:, -tokens:].clone(), value[:, -tokens:].clone())

    def previous(self, layer: int, block: int) -> EdgeKV | None:
        return self.tail.get((layer, block - 1))

    def following(self, layer: int, block: int) -> EdgeKV | None:
        return self.head.get((layer, block + 1))

    def evict_before(self, block: int) -> None:
        """Forget blocks older than ``block``: nothing left in the queue reads them any more."""
        for store in (self.head, self.tail):
            for key in [k for k in store if k[1] < block]:
                del store[key]

    def blocks(self) -> set[int]:
        return {b for _, b in self.head}

    def nbytes(self) -> int:
        return sum(
            e.key.numel() * e.key.element_size() + e.value.numel() * e.value.element_size()
            for store in (self.head, self.tail)
            for e in store.values()
        )
