"""Per-rank scenario runners (spawned by ``_parallel_dist.run_ranks``) and their single-device twins.

Spawning processes is the slow part of these tests (a few seconds each, mostly imports), so one
spawn per world size runs every scenario and returns a dict; the test files only compare.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import _parallel_models as M
import torch
import torch.distributed as dist
from diffusers import PixArtTransformer2DModel

from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.cfg import combine_cfg, make_cfg_groups
from parallel.patch.config import PatchConfig
from pipelines.families.pixart.patch import parallelize_dit_patch
from pipelines.families.sd.patch import parallelize_unet_patch, unet_alignment

STEPS = 4
FORWARD_ONLY = ("unet_odd", "unet2d")
GUIDANCE = 4.0
# name -> (builder, latent (B, C, H, W) for a single forward and for loops, parallelize fn)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, int, int, int], Callable]] = {
    # 2 levels: align 2; H=16 splits 6/6/4 over 3 ranks
    "unet": (lambda: M.tiny_unet(2), (1, 4, 16, 16), parallelize_unet_patch),
    # 3 levels: align 4; H=18 is not a multiple of 4, so diffusers forwards upsample_size
    "unet_odd": (lambda: M.tiny_unet(3), (1, 4, 18, 12), parallelize_unet_patch),
    # UNet2DModel: attention with its own GroupNorm on 4D input (VAE-style)
    "unet2d": (M.tiny_unet2d, (1, 4, 18, 12), parallelize_unet_patch),
    # patch 2: H=20 splits 8/6/6 over 3 ranks
    "pixart": (M.tiny_pixart, (1, 4, 20, 16), parallelize_dit_patch),
}


def align_of(model: torch.nn.Module) -> int:
    return model.config.patch_size if isinstance(model, PixArtTransformer2DModel) else unet_alignment(model)


def forward_input(shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-2 input for the single-forward comparison: (latent, t, text)."""
    g = torch.Generator().manual_seed(11)
    return torch.randn((2,) + shape[1:], generator=g), torch.tensor(500), M.text_embeddings(2)


def perturbation(shape: tuple[int, int, int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(12)
    return torch.randn((2,) + shape[1:], generator=g)


# ---- single device ----------------------------------------------------------------------------
def reference(name: str) -> dict[str, torch.Tensor]:
    build, shape, _ = MODELS[name]
    model = build()
    f = M.model_call(model)
    x, t, text = forward_input(shape)
    out = {}
    with torch.no_grad():
        out["forward"] = f(x, t, text)
        out["forward_eps"] = f(x + 1e-2 * perturbation(shape), t, text)
        out["forward_eps_small"] = f(x + 1e-3 * perturbation(shape), t, text)
    if name not in FORWARD_ONLY:
        out["loop"] = M.denoise(model, shape, STEPS)
        out["loop_cfg"] = M.denoise(model, shape, STEPS, guidance=GUIDANCE)
    return out


# ---- patch parallel ---------------------------------------------------------------------------
def patch_scenarios(rank: int, world: int) -> dict[str, Any]:
    """Everything patch-parallel over the whole world, for every model."""
    res: dict[str, Any] = {}
    for name, (build, shape, parallelize) in MODELS.items():
        model = build()
        bounds = band_bounds(shape[2], world, align_of(model))
        r: dict[str, Any] = {"bounds": bounds}
        f = M.model_call(model)
        x, t, text = forward_input(shape)
        # K/V projected by every band from the exchanged attention inputs
        handle = parallelize(model, dist.group.WORLD, PatchConfig("sync", kv_source="input"))
        with torch.no_grad():
            r["forward_inputs"] = f(slice_band(x, bounds, rank), t, text)
        r["bytes_forward_inputs"] = handle.bytes_sent
        handle = _reconfigure(handle, model, parallelize, PatchConfig("sync"))
        with torch.no_grad():
            r["forward"] = f(slice_band(x, bounds, rank), t, text)
        handle.reset()
        if name in FORWARD_ONLY:
            res[name] = r
            continue
        r["loop"] = M.denoise(model, shape, STEPS, bounds, rank)
        r["bytes_sync_loop"] = handle.bytes_sent
        handle.reset()
        r["loop_cfg"] = M.denoise(model, shape, STEPS, bounds, rank, guidance=GUIDANCE)
        r["gathered"] = gather_bands(r["loop"], dist.group.WORLD, bounds)
        handle.remove()

        # displaced with warmup covering every step: must equal sync
        handle = parallelize(model, dist.group.WORLD, PatchConfig("displaced", warmup_steps=STEPS))
        r["loop_displaced_warm"] = M.denoise(model, shape, STEPS, bounds, rank)
        handle.reset()
        # displaced after one sync step, twice with a reset between: stale but reproducible
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", warmup_steps=1))
        syncs: list[bool] = []
        held: list[int] = []

        def record(syncs: list[bool] = syncs, held: list[int] = held, handle: Any = handle) -> None:
            syncs.append(handle.last_forward_was_sync)
            held.append(handle.sends_held)

        r["loop_displaced"] = M.denoise(model, shape, STEPS, bounds, rank, on_step=record)
        r["displaced_syncs"] = syncs
        r["displaced_sends_held"] = held
        r["bytes_displaced_loop"] = handle.bytes_sent
        handle.reset()
        r["loop_displaced_again"] = M.denoise(model, shape, STEPS, bounds, rank)
        # freeing sent buffers after every exchange (the smallest lag) changes nothing in the result
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", warmup_steps=1, release_lag=1))
        r["loop_displaced_lag1"] = M.denoise(model, shape, STEPS, bounds, rank)
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", warmup_steps=1))
        # same input twice (stale == fresh): exact; then a slightly different input: close
        with torch.no_grad():
            xb = slice_band(x, bounds, rank)
            f(xb, t, text)
            r["forward_const"] = f(xb, t, text)
            r["forward_const_sync"] = handle.last_forward_was_sync
            r["forward_eps"] = f(slice_band(x + 1e-2 * perturbation(shape), bounds, rank), t, text)
            handle.reset()  # else the stale values would carry the error of the eps step
            f(xb, t, text)
            r["forward_eps_small"] = f(slice_band(x + 1e-3 * perturbation(shape), bounds, rank), t, text)
        # stale activations in float16: the synchronous warmup stays exact, displaced steps send half
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", STEPS, stale_dtype="float16"))
        r["loop_displaced_f16_warm"] = M.denoise(model, shape, STEPS, bounds, rank)
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", 1, stale_dtype="float16"))
        r["loop_displaced_f16"] = M.denoise(model, shape, STEPS, bounds, rank)
        r["bytes_displaced_f16_loop"] = handle.bytes_sent
        # the attention inputs instead of K/V: the same staleness, projected on the receiving side
        handle = _reconfigure(handle, model, parallelize, PatchConfig("displaced", 1, kv_source="input"))
        r["loop_displaced_inputs"] = M.denoise(model, shape, STEPS, bounds, rank)
        r["bytes_displaced_inputs_loop"] = handle.bytes_sent
        handle.reset()
        handle.remove()
        with torch.no_grad():  # unpatched again: the full latent on one process, no communication
            r["after_remove"] = f(x, t, text)
        res[name] = r
    res["errors"] = error_scenarios(rank, world)
    return res


def _reconfigure(handle: Any, model: torch.nn.Module, parallelize: Callable, config: PatchConfig) -> Any:
    handle.remove()
    return parallelize(model, dist.group.WORLD, config)


def error_scenarios(rank: int, world: int) -> dict[str, str]:
    """Messages of the errors that must be raised (identically on every rank)."""
    out: dict[str, str] = {}
    if world % 2:
        out["cfg_odd"] = _message(make_cfg_groups)
    if world > 1:
        # bands shorter than the alignment (2 rows for this UNet): rank 0 gets 1 row
        model = M.tiny_unet(2)
        whole_group = dist.group.WORLD
        parallelize_unet_patch(model, whole_group, PatchConfig("sync"))
        heights = [1] + [2] * (world - 1)
        x = torch.zeros(1, 4, heights[rank], 8)
        out["short_band"] = _message(lambda: model(x, 10, encoder_hidden_states=M.text_embeddings(1)))
    return out


def _message(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ValueError as e:
        return f"ValueError: {e}"
    except Exception:  # noqa: BLE001 - the test reports what was raised instead
        return "wrong exception:\n" + traceback.format_exc()
    return "no exception"


# ---- CFG parallel -----------------------------------------------------------------------------
def cfg_scenarios(rank: int, world: int) -> dict[str, Any]:
    """CFG parallel (2 branches x world/2 bands), sync patch parallel inside each branch."""
    layout = make_cfg_groups(dist.group.WORLD)
    res: dict[str, Any] = {
        "branch": layout.branch,
        "patch_rank": layout.patch_rank,
        "partner": layout.partner,
    }
    for name in ("unet", "pixart"):
        build, shape, parallelize = MODELS[name]
        model = build()
        bounds = band_bounds(shape[2], layout.patch_degree, align_of(model))
        handle = parallelize(model, layout.patch_group, PatchConfig("sync"))
        out = M.denoise(
            model,
            shape,
            STEPS,
            bounds,
            layout.patch_rank,
            guidance=GUIDANCE,
            combine=lambda n: combine_cfg(n, layout, GUIDANCE),
            branch=layout.branch,
        )
        res[name] = {"loop_cfg": out, "bounds": bounds, "patch_bytes": handle.bytes_sent}
        handle.remove()
        # displaced inside each branch, warmup covering every step: must still equal sync
        handle = parallelize(model, layout.patch_group, PatchConfig("displaced", warmup_steps=STEPS))
        res[name]["loop_cfg_displaced_warm"] = M.denoise(
            model,
            shape,
            STEPS,
            bounds,
            layout.patch_rank,
            guidance=GUIDANCE,
            combine=lambda n: combine_cfg(n, layout, GUIDANCE),
            branch=layout.branch,
        )
        handle.remove()
    res["cfg_bytes"] = layout.comm.bytes_sent()
    return res
