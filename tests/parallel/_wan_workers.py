"""A tiny diffusers Wan transformer, its single-device outputs, and the patch-parallel runs of the
same scenarios on each rank (spawned once per world size by ``_parallel_dist.run_ranks``)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from parallel.patch.bands import Bounds, band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.families.wan.patch import parallelize_wan_patch

TEXT_DIM = 16
STEPS = 3
# (B, C, F, H, W): H=14 latent rows = 7 patch rows, split 8/6 over 2 ranks and 6/4/4 over 3
IMAGE = (2, 4, 1, 14, 10)
VIDEO = (2, 4, 3, 14, 8)
LOOP = (1, 4, 3, 14, 8)


def tiny_wan(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    return model.eval()


def text(batch: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 5, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def latent(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def forward(model: torch.nn.Module, x: torch.Tensor, t: float = 500.0) -> torch.Tensor:
    ts = torch.full((x.shape[0],), t)
    with torch.no_grad():
        return model(x, ts, text(x.shape[0]), return_dict=False)[0]


def denoise(
    model: torch.nn.Module,
    steps: int = STEPS,
    bounds: Bounds | None = None,
    rank: int = 0,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Flow-matching Euler loop on one band (noise drawn at the full shape, then sliced)."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(steps)
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
    model = tiny_wan()
    return {
        "image": forward(model, latent(IMAGE, 11)),
        "video": forward(model, latent(VIDEO, 12)),
        "loop": denoise(model),
    }


def wan_scenarios(rank: int, world: int) -> dict[str, Any]:
    model = tiny_wan()
    group = dist.group.WORLD
    bounds = band_bounds(IMAGE[3], world, align=2)
    res: dict[str, Any] = {"bounds": bounds}
    handle = parallelize_wan_patch(model, group, PatchConfig("sync"))
    res["image"] = gather_bands(forward(model, slice_band(latent(IMAGE, 11), bounds, rank)), group, bounds)
    res["bytes_image"] = handle.bytes_sent.last_step
    handle.reset()
    res["video"] = gather_bands(forward(model, slice_band(latent(VIDEO, 12), bounds, rank)), group, bounds)
    handle.reset()
    res["loop"] = gather_bands(denoise(model, bounds=bounds, rank=rank), group, bounds)
    handle.remove()

    handle = parallelize_wan_patch(model, group, PatchConfig("displaced", warmup_steps=STEPS))
    res["loop_displaced_warm"] = gather_bands(denoise(model, bounds=bounds, rank=rank), group, bounds)
    handle.remove()

    handle = parallelize_wan_patch(model, group, PatchConfig("displaced", warmup_steps=1))
    syncs: list[bool] = []
    loop = denoise(
        model, bounds=bounds, rank=rank, on_step=lambda: syncs.append(handle.last_forward_was_sync)
    )
    res["loop_displaced"] = gather_bands(loop, group, bounds)
    res["displaced_syncs"] = syncs
    handle.remove()
    res["after_remove"] = forward(model, latent(IMAGE, 11))  # whole latent, no communication

    if world == 2:
        handle = parallelize_wan_patch(model, group, PatchConfig("sync"))
        rows = (3, 11)[rank]  # rank 0's band is not whole 2-row patches
        res["odd_band"] = _message(lambda: forward(model, torch.zeros(1, 4, 1, rows, 8)))
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
