"""The model's own forward on a whole video, as the frame pipeline's one "layer": what sequence and band
strategies of a video job run on.

``parallel.strategy=sequence`` and ``parallel.strategy=patch`` render the whole video as one frame block, and
every worker runs the frame pipeline's whole (one-block) queue itself: its loop, sampler hooks, checkpoints and
block writer, with no stages. What differs is only how one forward is split between the workers, which is the
model's business, not the loop's: diffusers' context parallelism splits the tokens inside the model's forward
(``parallel.sequence``), row bands split the latent before it (``parallel.patch``, ``BandSplit`` here). So a
family's plan for either is an adapter whose one layer calls the model's own forward on the whole latent
(``WholeVideoAdapter``, subclassed per family: what its forward takes and how it packs the latent), instead of
the frame plan's cut into blocks with neighbours' K/V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from parallel.dtype import compute_dtype
from parallel.frames.cache import FeatureCache
from parallel.frames.text import one_branch
from parallel.patch.bands import Bounds, gather_bands, slice_band
from parallel.patch.cfg import CFGLayout, swap_branches


@dataclass
class WholeInputs:
    """What a model's forward takes besides the latent, for one step."""

    timestep: torch.Tensor
    """[B] the step's timestep, one per batch row."""
    text: Any
    """The prompt as the family encodes it, both guidance branches batched (negative first): [B, L, D] embeddings,
    or a family's dict of them."""


class WholeVideoAdapter:
    """The frame pipeline's adapter protocol (``parallel.frames.adapter.FrameAdapter``) for one block and one
    layer: the model's forward. A family subclasses it with ``forward`` (and ``conditions``, ``embed`` / ``head`` when its model takes
    more than prompt embeddings, or the latent packed); by default the hidden states are the latent itself."""

    def __init__(self, model: nn.Module, block_shape: tuple[int, int, int, int], context_frames: int = 0) -> None:
        if context_frames:
            raise ValueError(f"context_frames: a whole video has no neighbour blocks, got {context_frames}")
        self.model = model
        self.block_shape = block_shape
        self.num_layers = 1
        self.cache = FeatureCache()  # one block: no neighbours

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype (``parallel.dtype``): what diffusers' pipelines cast its inputs to."""
        return compute_dtype(self.model)

    def remove(self) -> None:
        """Nothing was changed on the model (a subclass that swaps processors gives them back here)."""

    def embed(self, latent: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """[B, C, F, H, W] latent -> what the model's forward takes (default: the latent in the model's dtype)."""
        return latent.to(self.dtype)

    def conditions(self, timestep: torch.Tensor, text: Any) -> Any:
        """The step's timestep for every batch row and the prompt embeddings in the model's dtype (default)."""
        return WholeInputs(expand_timestep(timestep, text.shape[0]), text.to(self.dtype))

    def band_conditions(self, cond: Any, bounds: Bounds, rank: int) -> Any:
        """``cond`` for this worker's row band (``BandSplit``): unchanged, unless the family conditions the latent
        by rows (Wan image-to-video's channels, which join the band's latent)."""
        return cond

    def begin_block(self, block: int | None) -> None:
        """One block, no neighbours: nothing to tell."""

    def forward(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        """The model's own forward, as its diffusers pipeline calls it."""
        raise NotImplementedError

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.forward(hidden, cond)

    def head(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        """The forward's output -> [B, C, F, H, W] (default: it is that already)."""
        return hidden

    def hidden_shape(self, batch: int = 1, cond: Any = None) -> tuple[int, ...]:
        return (batch, *self.block_shape)


def expand_timestep(timestep: torch.Tensor, batch: int) -> torch.Tensor:
    """The step's timestep ([1] from the frame pipeline) as one per batch row, as diffusers' pipelines pass it."""
    return timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep.reshape(-1)


class BandSplit:
    """A ``WholeVideoAdapter`` whose forward runs on this worker's row band of every frame (the model under
    its family's patch plan, ``parallel.patch.parallelize_patch``), the bands' outputs gathered so that every
    worker gets the whole output and steps the same latent. The adapter's hidden states must be the latent."""

    def __init__(self, inner: WholeVideoAdapter, group: dist.ProcessGroup, bounds: Bounds) -> None:
        self.inner = inner
        self.group = group
        self.bounds = bounds
        self.rank = dist.get_rank(group)
        self.model, self.block_shape, self.num_layers, self.cache = (
            inner.model, inner.block_shape, inner.num_layers, inner.cache
        )

    def remove(self) -> None:
        self.inner.remove()

    def embed(self, latent: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.inner.embed(latent, cond)

    def conditions(self, timestep: torch.Tensor, text: Any) -> Any:
        return self.inner.band_conditions(self.inner.conditions(timestep, text), self.bounds, self.rank)

    def begin_block(self, block: int | None) -> None:
        self.inner.begin_block(block)

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        band = slice_band(hidden, self.bounds, self.rank).contiguous()
        return gather_bands(self.inner.run_layer(layer, band, cond), self.group, self.bounds)

    def head(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.inner.head(hidden, cond)

    def hidden_shape(self, batch: int = 1, cond: Any = None) -> tuple[int, ...]:
        return self.inner.hidden_shape(batch, cond)

    def finish_latent(self, block: int, latent: torch.Tensor) -> torch.Tensor:
        return finish_latent(self.inner, block, latent)


def finish_latent(adapter: Any, block: int, latent: torch.Tensor) -> torch.Tensor:
    """``adapter``'s end of a block (``FrameAdapter.finish_latent``), where it has one: what a wrapping adapter passes on."""
    finish = getattr(adapter, "finish_latent", None)
    return latent if finish is None else finish(block, latent)


class BranchSplit:
    """An adapter under CFG parallel (``parallel.patch.cfg``): the frame pipeline hands it both guidance branches
    batched (negative first), this worker runs its own branch's forward (``inner``: the model's forward, a
    ``BandSplit`` over its branch's workers, or for the frame pipeline itself the family's frame adapter, whose
    feature cache then holds this branch only) and swaps the output with its partner in the other branch, so
    every worker returns both branches' outputs and guides and steps the same latent. Halves the work per worker
    against batching both branches, for one exchange of the model's output per step."""

    def __init__(self, inner: Any, layout: CFGLayout) -> None:
        self.inner = inner
        self.layout = layout
        self.model, self.block_shape, self.num_layers, self.cache = (
            inner.model, inner.block_shape, inner.num_layers, inner.cache
        )

    @property
    def branch(self) -> str:
        """"cond" or "uncond": the guidance branch this worker runs (its feature cache holds that branch only)."""
        return self.layout.branch

    def remove(self) -> None:
        self.inner.remove()

    def conditions(self, timestep: torch.Tensor, text: Any) -> Any:
        return self.inner.conditions(timestep, one_branch(text, self.layout.is_cond))

    def begin_block(self, block: int | None) -> None:
        self.inner.begin_block(block)

    def embed(self, latent: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.inner.embed(latent[:1], cond)  # the frame pipeline batches the one latent once per branch

    def run_layer(self, layer: int, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.inner.run_layer(layer, hidden, cond)

    def head(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        """This branch's output and the partner's, as [negative; positive]."""
        return torch.cat(swap_branches(self.inner.head(hidden, cond), self.layout))

    def hidden_shape(self, batch: int = 1, cond: Any = None) -> tuple[int, ...]:
        return self.inner.hidden_shape(1, cond)

    def finish_latent(self, block: int, latent: torch.Tensor) -> torch.Tensor:
        return finish_latent(self.inner, block, latent)

    @property
    def without_exchange(self) -> BranchSplit:
        """The same pieces with a head that does not swap (``BranchAlone``): what the frame pipeline times its layers
        on, each branch's first stage on its own; a swap there would pair workers that may not both be timing (the
        costs are kept per worker, ``partition.layer_costs``)."""
        return BranchAlone(self.inner, self.layout)


class BranchAlone(BranchSplit):
    """``BranchSplit`` without its partner: the head returns this branch's output in both rows (timing only)."""

    def head(self, hidden: torch.Tensor, cond: Any) -> torch.Tensor:
        output = self.inner.head(hidden, cond)
        return torch.cat([output, output])

