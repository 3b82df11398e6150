"""Cut a video transformer's blocks into pipeline stages by measured forward cost, decode counted.

Each layer is timed on one frame block (forward only: rendering has no backward); the patch
embedding's cost is added to the first layer and the output head's to the last, since stage 0 and the
last stage run them. On CPU the clock is the thread's CPU time, which other processes on a shared
machine do not inflate (wall time there moved the cut from run to run); on an accelerator it is wall
time. Rank 0 measures and broadcasts, so every stage cuts the same way; a worker keeps what it measured per
model and input shapes (``per_module``), so rendering the same model again plans without re-timing it.

Without decode, ``stage_boundaries`` finds the contiguous cut minimising the slowest stage. With it,
``stage_plan`` also places each finished block's VAE decode: it comes once per block, not once per item,
and not in every tick (none while the queue fills, one per tick after), so folding it into a layer's
per-item cost balances the total but not the ticks, and the stage that decodes stalls the others in the
ticks that decode. ``stage_plan`` weighs a cut and a split of the block's frames over the stages by the
sum over ticks of the slowest stage's work in that tick (``schedule.tick_profile``), which is what a
pipeline whose stages wait for each other every tick takes. A VAE whose frames decode apart (a per-frame
VAE) may give every stage a share of the frames; a causal one decodes whole blocks, in order, on one stage
(its cache stays there): every stage is tried as that stage with every cut, since stage 0, which also runs
the embedding and the first layers, was the slowest one on the causal families when it always decoded.
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import torch

from parallel.frames.adapter import FrameAdapter
from parallel.training.partition import agree_on_costs, balanced_boundaries


def clock_for(device: torch.device) -> Callable[[], float]:
    """The clock costs are measured with: this thread's CPU time on CPU (not inflated by other load),
    wall time on an accelerator (whose work the host thread's CPU time does not see)."""
    return time.thread_time if torch.device(device).type == "cpu" else time.perf_counter


_MEASURED: weakref.WeakKeyDictionary[torch.nn.Module, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def per_module(module: torch.nn.Module, key: Hashable, measure: Callable[[], Any]) -> Any:
    """``measure()`` once per module and ``key`` in this process, then its kept result.

    A pool worker keeps its loaded model between jobs, and timing a real model's layers costs several
    forwards of a block (0.8-0.9 s of a 12 s render of the built-in model on CPU, repeated by every job
    before). Kept per module object (weakly: a model the worker drops takes its costs with it), so a model
    loaded again is timed again. ``key`` holds what the cost depends on besides the weights (shapes, batch,
    dtype); a model changed in place while kept (compiled, hooks added) keeps its old costs."""
    kept = _MEASURED.setdefault(module, {})
    if key not in kept:
        kept[key] = measure()
    return kept[key]


def input_signature(value: Any) -> Hashable:
    """Shapes and dtypes of a (nested) input, the part of it a forward's cost depends on."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), str(value.device))
    if isinstance(value, dict):
        return ("dict", tuple((k, input_signature(v)) for k, v in sorted(value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(input_signature(v) for v in value))
    return ("value", type(value).__name__, value if isinstance(value, (int, float, str, bool, type(None))) else None)


def layer_costs(adapter: FrameAdapter, text: Any, batch: int, repeats: int = 5) -> list[float]:
    """``measure_layer_costs``, kept per model, adapter and input shapes in this worker (``per_module``)."""
    key = ("layers", type(adapter).__qualname__, tuple(adapter.block_shape), batch, input_signature(text), repeats)
    return list(per_module(adapter.model, key, lambda: measure_layer_costs(adapter, text, batch, repeats)))


@torch.no_grad()
def measure_layer_costs(
    adapter: FrameAdapter, text: Any, batch: int | None = None, repeats: int = 5
) -> list[float]:
    """Seconds of each transformer layer on one frame block (embed and head folded in): the fastest of ``repeats``
    timings after a warm-up run; the block is batched as ``text`` is (``batch`` rows, 2 under classifier-free
    guidance; default: the rows of a tensor ``text``).

    Every repeat times every piece in turn (embed, each layer, head) rather than one piece ``repeats`` times in a
    row, and the fastest timing counts, not the median: a burst of other work on the machine (on a shared VM it
    slows even this thread's CPU time, through the caches) then inflates one timing of several pieces instead of
    all timings of the pieces it falls on. Timed one piece at a time with the median of 3, a 6-layer model's
    layers once measured uneven enough to move the cut of 2 stages from [0, 3, 6] to [0, 4, 6], a third more work
    on stage 0 (BENCHMARKS.md, "The 2 stages fill the cores")."""
    param = next(adapter.model.parameters())
    batch = text.shape[0] if batch is None else batch
    latent = torch.zeros((batch, *adapter.block_shape), dtype=param.dtype, device=param.device)
    cond = adapter.conditions(torch.tensor([500.0], device=param.device), text)
    adapter.begin_block(None)  # no cache traffic while measuring
    clock = clock_for(param.device)
    hidden = adapter.embed(latent, cond)
    for layer in range(adapter.num_layers):  # the warm-up run
        adapter.run_layer(layer, hidden, cond)
    adapter.head(hidden, cond)
    # every layer is timed on the embedding's output: the hidden states keep one shape through the layers (a stage
    # boundary may fall after any of them), so the cost is the same, and only one block's states are held
    pieces = [lambda: adapter.embed(latent, cond)]
    pieces += [lambda layer=layer: adapter.run_layer(layer, hidden, cond) for layer in range(adapter.num_layers)]
    pieces.append(lambda: adapter.head(hidden, cond))
    fastest = [math.inf] * len(pieces)
    for _ in range(repeats):
        for index, piece in enumerate(pieces):
            start = clock()
            piece()
            fastest[index] = min(fastest[index], clock() - start)
    costs = fastest[1:-1]
    costs[0] += fastest[0]
    costs[-1] += fastest[-1]
    return costs


def stage_boundaries(costs: list[float], stages: int) -> list[int]:
    """[0, b1, ..., layers]: every rank's agreed cut (rank 0's costs) into ``stages`` stages."""
    if stages > len(costs):
        raise ValueError(
            f"parallel.degree: {stages} stages exceed the model's {len(costs)} transformer blocks"
        )
    return balanced_boundaries(agree_on_costs(costs), stages)


MAX_CUTS = 2000
"""Cuts ``stage_plan`` tries one by one; beyond, only the layer-balanced cut (long layer lists, many stages)."""


def plan_seconds(
    loads: list[float], decodes: list[float], profile: Counter[tuple[int, int]]
) -> float:
    """Seconds a render takes when every tick lasts as long as its slowest stage: ``loads`` per item and
    ``decodes`` per block decoded, per stage; ``profile`` counts the ticks by (items, blocks decoded)."""
    return sum(
        count * max(items * load + decoded * decode for load, decode in zip(loads, decodes))
        for (items, decoded), count in profile.items()
    )


def stage_plan(
    costs: list[float],
    stages: int,
    profile: list[tuple[int, int]],
    frame_s: float = 0.0,
    frames: int = 1,
    by_frames: bool = False,
    decode_stage: int | None = None,
) -> tuple[list[int], list[int]]:
    """(boundaries [0, b1, ..., layers], latent frames of each block every stage decodes) minimising
    ``plan_seconds``. ``costs``: seconds per layer and item (rank 0's, agreed by the caller);
    ``profile``: ``schedule.tick_profile``; ``frame_s``: seconds to decode one latent frame; ``frames``: latent
    frames per block; ``by_frames``: the frames decode apart, so any stage may take a share (contiguous, in
    stage order), else one stage decodes them all (e.g. [0, 8]: stage 1), the one that makes the render
    shortest (on a tie the lowest), or ``decode_stage`` when given (a whole-block decode only)."""
    layers = len(costs)
    if stages > layers:
        raise ValueError(f"parallel.degree: {stages} stages exceed the model's {layers} transformer blocks")
    if decode_stage is not None and (by_frames or not 0 <= decode_stage < stages):
        raise ValueError(
            f"decode_stage: {decode_stage} must be a stage in [0, {stages}) of a whole-block decode "
            f"(by_frames={by_frames})"
        )
    ticks = Counter(profile)
    if math.comb(layers - 1, stages - 1) <= MAX_CUTS:
        cuts = [[0, *inner, layers] for inner in itertools.combinations(range(1, layers), stages - 1)]
    else:
        cuts = [balanced_boundaries(costs, stages)]
    best: tuple[float, list[int], list[int]] | None = None
    for cut in cuts:
        loads = [sum(costs[a:b]) for a, b in itertools.pairwise(cut)]
        shares = _shares(loads, ticks, frame_s, frames, by_frames, decode_stage)
        seconds = plan_seconds(loads, [share * frame_s for share in shares], ticks)
        if best is None or seconds < best[0] - 1e-12:
            best = (seconds, cut, shares)
    return best[1], best[2]


def _shares(
    loads: list[float],
    ticks: Counter[tuple[int, int]],
    frame_s: float,
    frames: int,
    by_frames: bool,
    decode_stage: int | None = None,
) -> list[int]:
    """A block's latent frames per stage for one cut: all on the one stage where they lengthen the render
    least (``decode_stage`` when given), or (``by_frames``) given out one at a time to the stage where each
    lengthens it least (on 2 stages: every split tried)."""
    stages = len(loads)
    if not by_frames or stages == 1:
        candidates = range(stages) if decode_stage is None else [decode_stage]
        whole = [[frames if s == stage else 0 for s in range(stages)] for stage in candidates]
        return min(whole, key=lambda s: plan_seconds(loads, [f * frame_s for f in s], ticks))
    if stages == 2:
        return min(
            ([first, frames - first] for first in range(frames + 1)),
            key=lambda s: plan_seconds(loads, [f * frame_s for f in s], ticks),
        )
    shares = [0] * stages
    for _ in range(frames):
        def cost(stage: int) -> float:
            trial = [f + (s == stage) for s, f in enumerate(shares)]
            return plan_seconds(loads, [f * frame_s for f in trial], ticks)

        shares[min(range(stages), key=cost)] += 1
    return shares
