"""What the frame pipeline needs from a video DiT: its forward cut into pieces, as a model family supplies it.

``FramePipeline`` runs ``embed`` on stage 0, ``run_layer`` for its own layers on every stage, and ``head``
on the last stage; ``conditions`` (the per-timestep inputs of every layer) is recomputed on each stage
instead of being sent. ``begin_block`` tells the adapter's self-attention which frame block passes, so it
can read and fill the neighbours' edge K/V in ``cache``. Run in sequence the pieces equal the model's
forward on one frame block. A family's adapter (``pipelines.families.wan.frames.WanFrameAdapter``) is
built by a ``FrameAdapterFactory`` from the model, the block's latent shape and the context frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from parallel.frames.cache import FeatureCache


class FrameAdapter(Protocol):
    model: nn.Module
    """The video DiT."""
    block_shape: tuple[int, int, int, int]
    """(channels, frames, height, width) of one frame block's latent."""
    num_layers: int
    """Transformer blocks: the units stages are cut from."""
    cache: FeatureCache
    """The neighbour blocks' edge K/V, per layer."""

    def embed(self, latent: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """[B, C, F, H, W] latent -> [B, tokens, dim] hidden states. ``cond``: this step's ``conditions``; a
        joint-attention model (text and video tokens updated by every block) puts the projected text tokens
        into the hidden states here, so they travel between stages with the video tokens."""

    def conditions(self, timestep: torch.Tensor, text: Any) -> Any:
        """Every layer's per-timestep inputs (time embedding, projected text), computed locally. ``text`` is
        the family's encoded prompt as its video pipeline made it (one tensor, or a dict of batch-first
        tensors; both guidance branches batched, negative first), on the model's device."""

    def begin_block(self, block: int | None) -> None:
        """The frame block the next ``embed`` and layers see (None: no block, no cache traffic, e.g. while
        measuring)."""

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        """One transformer block."""

    def head(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        """[B, tokens, dim] -> [B, C, F, H, W] model output. An adapter may set ``output_dtype`` (e.g. float32,
        where its diffusers pipeline upcasts the noise prediction before guidance) when ``head`` returns another
        dtype than the hidden states': the last stage sends the output to stage 0 in it. An adapter whose head
        exchanges with other workers (a guidance branch per pipeline) may offer ``without_exchange``, the same
        pieces with a head that does not, which the pipeline times its layers on. An adapter may offer
        ``finish_latent(block, latent)``: a block's latent after its last step as the family's pipeline ends it (Wan
        TI2V image-to-video: block 0's first latent frame the image's), which stage 0 applies before the block
        leaves."""

    def hidden_shape(self, batch: int = 1, cond: Any = None) -> tuple[int, int, int]:
        """The shape of the hidden states that travel between stages (``cond``: a step's ``conditions``, for a
        model whose hidden states carry the text tokens too)."""

    def remove(self) -> None:
        """Give the model back its own attention."""


FrameAdapterFactory = Callable[[nn.Module, tuple[int, int, int, int], int], FrameAdapter]
"""(model, block latent shape, context frames) -> the family's adapter."""
