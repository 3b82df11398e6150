"""First Block Cache on the tiny Flux transformer of ``_flux_workers``: one device, and row bands on each rank
(spawned by ``_parallel_dist.run_ranks``), over a longer flow-matching loop than the band tests use."""

from __future__ import annotations

from typing import Any

import _flux_workers as W
import torch
import torch.distributed as dist
from _tiny_flux import SCHEDULER
from diffusers import FlowMatchEulerDiscreteScheduler

from parallel.cache.config import CacheConfig
from parallel.cache.first_block import FirstBlockCache, apply_first_block_cache
from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.families.flux import FLUX
from pipelines.families.flux.patch import parallelize_flux_patch

STEPS = 10


def cached_loop(model: torch.nn.Module, cache: FirstBlockCache | None, bounds=None, rank: int = 0) -> torch.Tensor:
    """Flux's loop over ``STEPS`` steps on the latent or one band of it, telling ``cache`` each step."""
    sched = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    FLUX.set_timesteps(None, sched, STEPS, W.LOOP, "cpu")
    x = W.latent(W.LOOP, seed=7)
    if bounds is not None:
        x = slice_band(x, bounds, rank)
    for step, t in enumerate(sched.timesteps):
        if cache is not None:
            cache.begin_step(step)
        noise = W.forward(model, x, W.LOOP[2], float(t) / 1000)
        if cache is not None:
            cache.end_step()
        x = sched.step(noise, t, x, return_dict=False)[0]
    return x


def run_cached(model: torch.nn.Module, threshold: float, bounds=None, rank: int = 0) -> dict[str, Any]:
    cache = apply_first_block_cache(model, CacheConfig(mode="first-block", threshold=threshold), first_step=0)
    try:
        latent = cached_loop(model, cache, bounds, rank)
        return {"latent": latent, "report": cache.report()}
    finally:
        cache.close()


def threshold_between(changes: dict[int, float]) -> float:
    """A threshold with measured changes on both sides of it (so that some steps reuse and some do not)."""
    values = sorted(changes.values())
    middle = len(values) // 2
    return (values[middle - 1] + values[middle]) / 2


def one_device() -> dict[str, Any]:
    model = W.tiny_flux()
    measured = run_cached(model, threshold=1e-9)  # every step full: the changes of the uncached loop
    threshold = threshold_between(measured["report"]["changes"])
    return {
        "plain": cached_loop(model, None),
        "all_full": measured,
        "threshold": threshold,
        "cached": run_cached(model, threshold),
        "after_close": cached_loop(model, None),
    }


def banded(rank: int, world: int, threshold: float) -> dict[str, Any]:
    model = W.tiny_flux()
    group = dist.group.WORLD
    bounds = band_bounds(W.LOOP[2], world, align=2)
    handle = parallelize_flux_patch(model, group, PatchConfig("sync"))
    result = run_cached(model, threshold, bounds, rank)
    result["latent"] = gather_bands(result["latent"], group, bounds)
    handle.reset()
    # what this band alone would have measured: the decision diffusers' own hook would take per band
    alone = apply_first_block_cache(model, CacheConfig(mode="first-block", threshold=1e-9), first_step=0)
    local: dict[int, float] = {}
    head = alone.blocks[0]._diffusers_hook.get_hook("tessera_first_block_head")
    measure = head._should_compute_remaining_blocks

    def local_change(residual, previous=None):
        previous = head.state_manager.get_state().head_block_residual
        if previous is not None:
            local[alone.step] = float(((residual - previous).abs().sum() / previous.abs().sum()).item())
        return measure(residual)

    head._should_compute_remaining_blocks = local_change
    cached_loop(model, alone, bounds, rank)
    alone.close()
    handle.remove()
    result["local_changes"] = local
    return result
