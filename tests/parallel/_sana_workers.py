"""Tiny diffusers Sana transformers, their single-device outputs, and the patch-parallel runs of the same scenarios
on each rank (spawned once per world size by ``_parallel_dist.run_ranks``).

Two transformers: Sana's own layout (patch 1, no positional embedding) and one with 2x2 patches and sin-cos
positions (``interpolation_scale`` set), so that the patch embedding's band positions are exercised too.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from _tiny_pixart import nonzero
from _tiny_sana import tiny_sana_transformer
from diffusers import FlowMatchEulerDiscreteScheduler

from parallel.patch.bands import Bounds, band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.families.sana.patch import parallelize_sana_patch

CHANNELS, TEXT_DIM, TEXT_TOKENS = 8, 24, 6
STEPS = 3
MODELS = {
    # name: (constructor arguments, latent (B, C, rows, columns)); 10 rows split 5/5 and 4/3/3,
    # 14 rows of 2x2 patches split 8/6 and 6/4/4
    "sana": ({"patch_size": 1}, (2, CHANNELS, 10, 6)),
    "sana_pe": ({"patch_size": 2, "interpolation_scale": 1}, (2, CHANNELS, 14, 8)),
}
LARGER = (2, CHANNELS, 20, 12)
"""The first model's latent at twice the height and width, for the traffic that must not grow with it."""


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return nonzero(tiny_sana_transformer(CHANNELS, TEXT_DIM, **MODELS[name][0]), seed + 1)


def text(batch: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings and their mask (the last two tokens of the first sample are padding)."""
    embeddings = torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.long)
    mask[0, -2:] = 0
    return embeddings, mask


def latent(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def forward(model: torch.nn.Module, x: torch.Tensor, t: float = 500.0) -> torch.Tensor:
    """The transformer called as SanaPipeline calls it."""
    embeddings, mask = text(x.shape[0])
    timestep = torch.full((x.shape[0],), t) * model.config.timestep_scale
    with torch.no_grad():
        return model(
            x, encoder_hidden_states=embeddings, encoder_attention_mask=mask, timestep=timestep, return_dict=False
        )[0]


def denoise(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    bounds: Bounds | None = None,
    rank: int = 0,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """A flow-matching Euler loop on one band (noise drawn at the full shape, then sliced)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(STEPS)
    x = latent((1, *shape[1:]), seed=7)
    if bounds is not None:
        x = slice_band(x, bounds, rank)
    for t in scheduler.timesteps:
        flow = forward(model, x, float(t))
        if on_step is not None:
            on_step()
        x = scheduler.step(flow, t, x).prev_sample
    return x


def reference(name: str) -> dict[str, torch.Tensor]:
    model = tiny(name)
    shape = MODELS[name][1]
    return {"forward": forward(model, latent(shape, 11)), "loop": denoise(model, shape)}


def _scenarios(name: str, rank: int, world: int) -> dict[str, Any]:
    model = tiny(name)
    group = dist.group.WORLD
    shape = MODELS[name][1]
    align = model.config.patch_size
    bounds = band_bounds(shape[2], world, align)
    x = slice_band(latent(shape, 11), bounds, rank)
    res: dict[str, Any] = {"bounds": bounds}

    handle = parallelize_sana_patch(model, group, PatchConfig("sync"))
    res["forward"] = gather_bands(forward(model, x), group, bounds)
    res["bytes_forward"] = handle.bytes_sent.last_step
    handle.reset()
    res["loop"] = gather_bands(denoise(model, shape, bounds, rank), group, bounds)
    if name == "sana":
        handle.reset()
        larger = band_bounds(LARGER[2], world, align)
        forward(model, slice_band(latent(LARGER, 12), larger, rank))
        res["bytes_larger"] = handle.bytes_sent.last_step
    handle.remove()

    handle = parallelize_sana_patch(model, group, PatchConfig("displaced", warmup_steps=STEPS))
    res["loop_displaced_warm"] = gather_bands(denoise(model, shape, bounds, rank), group, bounds)
    handle.remove()

    handle = parallelize_sana_patch(model, group, PatchConfig("displaced", warmup_steps=1))
    syncs: list[bool] = []
    loop = denoise(model, shape, bounds, rank, on_step=lambda: syncs.append(handle.last_forward_was_sync))
    res["loop_displaced"] = gather_bands(loop, group, bounds)
    res["displaced_syncs"] = syncs
    handle.reset()
    forward(model, x)  # synchronous
    res["forward_const"] = gather_bands(forward(model, x), group, bounds)  # displaced, stale = fresh
    res["forward_const_sync"] = handle.last_forward_was_sync
    handle.remove()
    res["after_remove"] = forward(model, latent(shape, 11))  # the whole latent, no communication
    return res


def sana_scenarios(rank: int, world: int) -> dict[str, Any]:
    res = {name: _scenarios(name, rank, world) for name in MODELS}
    if world == 2:
        model, group = tiny("sana_pe"), dist.group.WORLD
        handle = parallelize_sana_patch(model, group, PatchConfig("sync"))
        rows = (3, 11)[rank]  # rank 0's band is not whole 2-row patches
        res["odd_band"] = _message(lambda: forward(model, torch.zeros(1, CHANNELS, rows, 8)))
        handle.remove()
    return res


def _message(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ValueError as e:
        return f"ValueError: {e}"
    except Exception:  # noqa: BLE001 - the test reports what was raised instead
        return "wrong exception:\n" + traceback.format_exc()
    return "no exception"
