"""Cut a layer list into pipeline stages by measured cost.

`profile_layer_costs` times each layer's forward and backward on a sample micro-batch (the layers run in
order, each on the previous layer's detached output), `balanced_boundaries` cuts the list into contiguous
stages that minimise the most expensive stage. Timings differ between processes, and every rank must cut
the same way, so `agree_on_costs` broadcasts rank 0's measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn


def _as_tuple(value) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _fresh_inputs(carry: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Detached copies; float ones require a gradient, as DeepSpeed makes received activations."""
    fresh = []
    for tensor in carry:
        tensor = tensor.detach().clone()
        tensor.requires_grad_(tensor.is_floating_point())
        fresh.append(tensor)
    return tuple(fresh)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def profile_layer_costs(
    layers: Sequence[nn.Module], sample_inputs: tuple[torch.Tensor, ...], repeats: int = 3
) -> list[float]:
    """Median seconds of forward + backward per layer on `sample_inputs` (one micro-batch)."""
    costs = []
    carry = tuple(sample_inputs)
    for layer in layers:
        samples = []
        outputs: tuple[torch.Tensor, ...] = ()
        for _ in range(repeats + 1):  # the first run warms up and is dropped
            inputs = _fresh_inputs(carry)
            start = time.perf_counter()
            outputs = _as_tuple(layer(inputs))
            grads = [(t, torch.ones_like(t)) for t in outputs if t.requires_grad]
            if grads:
                torch.autograd.backward([t for t, _ in grads], [g for _, g in grads])
            samples.append(time.perf_counter() - start)
        costs.append(statistics.median(samples[1:]))
        carry = tuple(t.detach() for t in outputs)
        layer.zero_grad(set_to_none=True)
    return costs


def agree_on_costs(costs: list[float]) -> list[float]:
    """Rank 0's costs on every rank (unchanged without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return costs
    box = [costs]
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


def balanced_boundaries(costs: Sequence[float], stages: int) -> list[int]:
    """Stage boundaries [0, b1, ..., len(costs)] of contiguous stages minimising the largest stage cost.

    Every stage gets at least one layer. Exact dynamic programme; layer lists here are short.
    """
    count = len(costs)
    if not 1 <= stages <= count:
        raise ValueError(f"stages: need 1 <= stages <= {count} layers, got {stages}")
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    inf = float("inf")
    # best[s][i]: the smallest possible maximum stage cost placing the first i layers in s stages.
    best = [[inf] * (count + 1) for _ in range(stages + 1)]
    cut = [[0] * (count + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, count + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    bounds = [count]
    for s in range(stages, 0, -1):
        bounds.append(cut[s][bounds[-1]])
    return bounds[::-1]
