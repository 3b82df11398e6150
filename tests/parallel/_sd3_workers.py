"""The tiny SD3.5-layout transformer (tests/_tiny_sd3.py), its single-device outputs, and the patch-parallel runs
of the same scenarios on each rank (spawned once per world size by ``_parallel_dist.run_ranks``)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from _tiny_sd3 import tiny_sd3_transformer
from diffusers import FlowMatchEulerDiscreteScheduler

from parallel.patch.bands import Bounds, band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.families.sd3.patch import parallelize_sd3_patch

STEPS = 3
TEXT_TOKENS = 7
# (B, C, H, W): H=14 latent rows = 7 patch rows, split 8/6 over 2 ranks and 6/4/4 over 3; W=10 (5 patch columns),
# both under pos_embed_max_size=16 patches, so the positions are a centred crop
IMAGE = (2, 4, 14, 10)
LOOP = (1, 4, 14, 10)


def conditioning(model: torch.nn.Module, batch: int, seed: int = 3) -> dict[str, torch.Tensor]:
    """Text tokens and pooled projections of the widths the transformer's config names."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    return {
        "encoder_hidden_states": torch.randn(batch, TEXT_TOKENS, config.joint_attention_dim, generator=generator),
        "pooled_projections": torch.randn(batch, config.pooled_projection_dim, generator=generator),
    }


def latent(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def forward(model: torch.nn.Module, x: torch.Tensor, t: float = 500.0) -> torch.Tensor:
    timestep = torch.full((x.shape[0],), t)
    with torch.no_grad():
        return model(hidden_states=x, timestep=timestep, **conditioning(model, x.shape[0]), return_dict=False)[0]


def denoise(
    model: torch.nn.Module,
    bounds: Bounds | None = None,
    rank: int = 0,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Flow-matching Euler loop (SD3's shift) on one band: noise drawn at the full shape, then sliced."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(STEPS)
    x = latent(LOOP, seed=7)
    if bounds is not None:
        x = slice_band(x, bounds, rank)
    for t in sched.timesteps:
        noise = forward(model, x, float(t))
        if on_step is not None:
            on_step()
        x = sched.step(noise, t, x).prev_sample
    return x


def reference() -> dict[str, torch.Tensor]:
    model = tiny_sd3_transformer()
    return {"image": forward(model, latent(IMAGE, 11)), "loop": denoise(model)}


def sd3_scenarios(rank: int, world: int) -> dict[str, Any]:
    model = tiny_sd3_transformer()
    group = dist.group.WORLD
    bounds = band_bounds(IMAGE[2], world, align=model.config.patch_size)
    res: dict[str, Any] = {"bounds": bounds}

    def bands(run: Callable[[], torch.Tensor]) -> torch.Tensor:
        return gather_bands(run(), group, bounds)

    handle = parallelize_sd3_patch(model, group, PatchConfig("sync"))
    res["image"] = bands(lambda: forward(model, slice_band(latent(IMAGE, 11), bounds, rank)))
    res["bytes_image"] = handle.bytes_sent.last_step
    handle.reset()
    res["loop"] = bands(lambda: denoise(model, bounds, rank))
    handle.remove()

    handle = parallelize_sd3_patch(model, group, PatchConfig("sync", kv_source="input"))
    res["image_input"] = bands(lambda: forward(model, slice_band(latent(IMAGE, 11), bounds, rank)))
    handle.remove()

    handle = parallelize_sd3_patch(model, group, PatchConfig("displaced", warmup_steps=STEPS))
    res["loop_displaced_warm"] = bands(lambda: denoise(model, bounds, rank))
    handle.remove()

    handle = parallelize_sd3_patch(model, group, PatchConfig("displaced", warmup_steps=1))
    syncs: list[bool] = []
    res["loop_displaced"] = bands(
        lambda: denoise(model, bounds, rank, on_step=lambda: syncs.append(handle.last_forward_was_sync))
    )
    res["displaced_syncs"] = syncs
    handle.remove()
    res["after_remove"] = forward(model, latent(IMAGE, 11))  # whole latent, no communication

    if world == 2:
        handle = parallelize_sd3_patch(model, group, PatchConfig("sync"))
        rows = (3, 11)[rank]  # rank 0's band is not whole 2-row patches
        res["odd_band"] = _message(lambda: forward(model, torch.zeros(1, 4, rows, 10)))
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
