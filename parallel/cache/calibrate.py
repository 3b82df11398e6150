"""A quality budget instead of a magic number: the fastest cache setting whose result stays within
``cache.min_psnr`` dB of full compute, found by rendering.

One full-compute render is the reference (for First Block Cache it also measures each step's change, which gives
the thresholds worth trying: a threshold just above a measured change is where a decision flips). Then a binary
search over the candidate settings, ordered from slow to fast, renders with the cache and keeps the fastest that
meets the budget; PSNR falls as reuse grows, so about log2(candidates) cached renders suffice. Under bands, CFG
halves or sequence shards every worker takes part in each render and the error is summed over the job's group, so
every worker picks the same setting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from parallel.cache.config import CacheConfig

Render = Callable[[CacheConfig], tuple[torch.Tensor, dict]]
"""Render the whole job once with this cache config (mode "none": full compute): (this worker's final latent, the
cache's report)."""

MAX_INTERVAL = 8
"""DeepCache, TaylorSeer: the longest interval tried."""
BLOCK_THRESHOLD_LOW, BLOCK_THRESHOLD_STEP, BLOCK_THRESHOLDS = 0.005, 1.6, 12
"""Block caching: thresholds tried, 0.005 to 0.9 in steps of 1.6x."""


@dataclass
class Calibration:
    """What calibration chose, recorded in metadata.json and kept with the job (its checkpoints, the store)."""

    min_psnr: float
    """The budget, dB against full compute."""
    knob: str
    """The setting chosen: "threshold" (first-block, teacache, block-cache) or "interval" (deepcache, taylorseer)."""
    value: float | None
    """The fastest setting within the budget; None: none was (the job runs in full)."""
    psnr: float | None
    """Its PSNR against full compute, as measured (dB; inf: equal)."""
    renders: int = 0
    """Renders calibration ran (the reference included); 0 when it came from the store."""
    seconds: float = 0.0
    """Their wall time."""

    def applied(self, config: CacheConfig) -> CacheConfig:
        """``config`` with the chosen setting (mode "none" when no setting met the budget)."""
        if self.value is None:
            return replace(config, mode="none")
        value = int(self.value) if self.knob == "interval" else float(self.value)
        return replace(config, **{self.knob: value})

    def as_dict(self) -> dict:
        return dict(vars(self))


def group_psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """20 log10(peak / RMSE) over the whole latent, every worker's share summed over the job's group (peak: the
    reference's value range). Copies held twice (CFG partners) weigh twice in both sums: the ratio is unchanged."""
    diff = (output.double() - reference.double()).pow(2)
    sums = torch.tensor([diff.sum().item(), float(diff.numel())], dtype=torch.float64)
    high = reference.max().double().reshape(1)
    low = -reference.min().double().reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sums)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MAX)
    mse = float(sums[0] / sums[1])
    peak = float(high + low)
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def candidates(config: CacheConfig, measured: dict, steps: int) -> tuple[str, list]:
    """The knob and its settings worth trying, slowest first."""
    if config.mode == "first-block":
        changes = sorted(set(measured.get("changes", {}).values()))
        return "threshold", [change * 1.0001 + 1e-12 for change in changes]
    if config.mode == "teacache":  # a run of k reused steps needs the sum of their k changes under the threshold
        changes = [change for _, change in sorted(measured.get("changes", {}).items())]
        sums = {sum(changes[i : i + k]) for k in range(1, config.max_skips + 1) for i in range(len(changes) - k + 1)}
        return "threshold", [total * 1.0001 + 1e-12 for total in sorted(sums)]
    if config.mode == "block-cache":  # a block's expected change since it ran: from rarely to often reused
        return "threshold", [BLOCK_THRESHOLD_LOW * BLOCK_THRESHOLD_STEP**i for i in range(BLOCK_THRESHOLDS)]
    if config.mode in ("deepcache", "taylorseer"):
        return "interval", list(range(2, max(2, min(MAX_INTERVAL, steps - config.warmup_steps)) + 1))
    raise ValueError(f"cache.mode: {config.mode!r} has no setting to calibrate")


def calibrate(render: Render, config: CacheConfig, steps: int, min_psnr: float) -> Calibration:
    """The fastest setting of ``config``'s mode within ``min_psnr`` dB of full compute (see the module)."""
    started = time.perf_counter()
    # first-block at threshold 0 computes every step and measures every change; deepcache's reference is no cache
    measuring = config.mode in ("first-block", "teacache")  # at threshold 0 every step computes and is measured
    reference_config = replace(config, threshold=0.0) if measuring else replace(config, mode="none")
    reference, measured = render(reference_config)
    knob, settings = candidates(config, measured, steps)
    renders, best, best_psnr = 1, None, None
    low, high = 0, len(settings) - 1
    while low <= high:
        middle = (low + high) // 2
        output, _ = render(replace(config, **{knob: settings[middle]}))
        renders += 1
        quality = group_psnr(output, reference)
        if quality >= min_psnr:
            best, best_psnr, low = settings[middle], quality, middle + 1
        else:
            high = middle - 1
    return Calibration(min_psnr, knob, best, best_psnr, renders, time.perf_counter() - started)
