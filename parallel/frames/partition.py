"""Cut a video transformer's blocks into pipeline stages by measured forward cost.

Each layer is timed on one frame block (forward only: rendering has no backward); the patch
embedding's cost is added to the first layer and the output head's to the last, since stage 0 and the
last stage run them. ``parallel.pipeline_partition`` then finds the contiguous cut minimising the
slowest stage, and rank 0's measurement is broadcast so every stage cuts the same way.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from parallel.frames.adapter import FrameAdapter
from parallel.training.partition import agree_on_costs, balanced_boundaries


def _median_seconds(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats + 1):  # the first run warms up and is dropped
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[1:])


@torch.no_grad()
def measure_layer_costs(
    adapter: FrameAdapter, text: Any, batch: int | None = None, repeats: int = 3
) -> list[float]:
    """Median forward seconds of each transformer layer on one frame block (embed and head folded in);
    the block is batched as ``text`` is (``batch`` rows, 2 under classifier-free guidance; default: the rows
    of a tensor ``text``)."""
    param = next(adapter.model.parameters())
    batch = text.shape[0] if batch is None else batch
    latent = torch.zeros((batch, *adapter.block_shape), dtype=param.dtype, device=param.device)
    cond = adapter.conditions(torch.tensor([500.0], device=param.device), text)
    adapter.begin_block(None)  # no cache traffic while measuring
    hidden = adapter.embed(latent, cond)
    costs = []
    embed_cost = _median_seconds(lambda: adapter.embed(latent, cond), repeats)
    for layer in range(adapter.num_layers):
        costs.append(
            _median_seconds(
                lambda layer=layer, hidden=hidden: adapter.run_layer(layer, hidden, cond), repeats
            )
        )
        hidden = adapter.run_layer(layer, hidden, cond)
    costs[0] += embed_cost
    costs[-1] += _median_seconds(lambda: adapter.head(hidden, cond), repeats)
    return costs


def stage_boundaries(costs: list[float], stages: int) -> list[int]:
    """[0, b1, ..., layers]: every rank's agreed cut (rank 0's costs) into ``stages`` stages."""
    if stages > len(costs):
        raise ValueError(
            f"parallel.degree: {stages} stages exceed the model's {len(costs)} transformer blocks"
        )
    return balanced_boundaries(agree_on_costs(costs), stages)
