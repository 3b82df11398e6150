"""Per-rank runs of the real strategies (spawned by ``_parallel_dist.run_ranks``) that report the bytes
``parallel.comm.Comm`` counted in one steady-state step."""

from __future__ import annotations

from typing import Any

import _parallel_models as M
import _parallel_workers as W
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from parallel.patch.bands import band_bounds, slice_band
from parallel.patch.cfg import combine_cfg, make_cfg_groups
from parallel.patch.config import PatchConfig

FORWARDS = 3
"""Forwards per run: the first exchanges shapes (``meta``) and, in displaced mode, is the sync warmup."""


PATCH_CONFIGS = {
    "sync": PatchConfig("sync"),
    "displaced": PatchConfig("displaced", warmup_steps=1),
    "displaced_inputs": PatchConfig("displaced", warmup_steps=1, kv_source="input"),
    "displaced_inputs_f16": PatchConfig("displaced", warmup_steps=1, kv_source="input", stale_dtype="float16"),
}


def patch_bytes(rank: int, world: int) -> dict[str, Any]:
    """Last-forward bytes by kind and peer per ``PATCH_CONFIGS`` entry, for the tiny UNet and PixArt (batch 2)."""
    out: dict[str, Any] = {}
    for name in ("unet", "pixart"):
        build, shape, parallelize = W.MODELS[name]
        model = build()
        bounds = band_bounds(shape[2], world, W.align_of(model))
        res: dict[str, Any] = {"bounds": bounds}
        x, t, text = W.forward_input(shape)
        f = M.model_call(model)
        for label, config in PATCH_CONFIGS.items():
            handle = parallelize(model, dist.group.WORLD, config)
            with torch.no_grad():
                for _ in range(FORWARDS):
                    f(slice_band(x, bounds, rank), t, text)
            res[label] = handle.bytes_sent.last_step
            handle.remove()
        out[name] = res
    return out


def cfg_bytes(rank: int, world: int) -> dict[str, Any]:
    """CFG parallel on the tiny UNet: 2 branches x world/2 bands, one guided forward after a first one."""
    layout = make_cfg_groups(dist.group.WORLD)
    build, shape, parallelize = W.MODELS["unet"]
    model = build()
    bounds = band_bounds(shape[2], layout.patch_degree, W.align_of(model))
    handle = parallelize(model, layout.patch_group, PatchConfig("sync"))
    f = M.model_call(model)
    latent = slice_band(torch.randn(shape), bounds, layout.patch_rank)
    text = M.text_embeddings(1, seed=3 if layout.is_cond else 4)
    before = {}
    with torch.no_grad():
        for i in range(FORWARDS):
            if i == FORWARDS - 1:
                before = layout.comm.bytes_sent().total.get("cfg", {})
            combine_cfg(f(latent, torch.tensor(500), text), layout, 4.0)
    after = layout.comm.bytes_sent().total.get("cfg", {})
    cfg = {peer: n - before.get(peer, 0) for peer, n in after.items()}
    return {"bounds": bounds, "patch": handle.bytes_sent.last_step, "cfg": cfg, "patch_rank": layout.patch_rank}


def frame_bytes(rank: int, world: int) -> dict[str, Any]:
    """The frame pipeline's "plain" test scenario over ``world`` stages: bytes sent per peer, work items."""
    from _video_workers import SCENARIOS, run_pipeline

    stats = run_pipeline(SCENARIOS["plain"], dist.group.WORLD)["stats"]
    return {"bytes": stats.bytes_sent, "items": stats.items, "config": SCENARIOS["plain"]}


FLUX_CONFIGS = {
    "sync_kv": PatchConfig("sync"),
    "sync_input": PatchConfig("sync", kv_source="input"),
    "displaced_input_f16": PatchConfig("displaced", warmup_steps=1, kv_source="input", stale_dtype="float16"),
}


def flux_band_bytes(rank: int, world: int) -> dict[str, Any]:
    """Last-forward bytes by kind and peer per ``FLUX_CONFIGS`` entry, for the tiny Flux transformer on row bands
    (batch 2, called through the Flux family's ``denoise`` as a render calls it)."""
    import _flux_workers as F

    from pipelines.families.flux.patch import parallelize_flux_patch

    model = F.tiny_flux()
    bounds = band_bounds(F.SHAPE[2], world, align=2)
    band = slice_band(F.latent(F.SHAPE, 11), bounds, rank)
    out: dict[str, Any] = {"bounds": bounds}
    for label, config in FLUX_CONFIGS.items():
        handle = parallelize_flux_patch(model, dist.group.WORLD, config)
        for _ in range(FORWARDS):
            F.forward(model, band, F.SHAPE[2])
        out[label] = handle.bytes_sent.last_step
        handle.remove()
    return out


class OpCount(TorchDispatchMode):
    """Ops dispatched under it that are not views (kernels launched), as ``parallel.cost.profile`` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.ops += not (getattr(func, "is_view", False) or "_unsafe_view" in str(func))
        return func(*args, **(kwargs or {}))


def sequence_bytes(rank: int, world: int) -> dict[str, Any]:
    """Bytes by kind and peer, and ops dispatched, of one forward of the tiny Flux transformer (batch 1) under
    diffusers' context parallelism, per (ulysses, ring) layout of ``world`` workers ("ops" alone: on one)."""
    import _sequence_models as S

    from parallel.sequence import SequenceConfig, parallelize_sequence

    layouts = {2: [(2, 1), (1, 2)], 4: [(4, 1), (2, 2), (1, 4)]}[world]
    model = S.tiny_flux()
    text = S.prompts(model)["cond"]

    def forward() -> int:
        count = OpCount()
        with torch.no_grad(), count:
            S.flux_forward(model, S.initial_latent(), torch.tensor(700.0), text)
        return count.ops

    out: dict[str, Any] = {"ops": forward()}
    for ulysses, ring in layouts:
        handle = parallelize_sequence(model, dist.group.WORLD, SequenceConfig(ulysses=ulysses, ring=ring))
        forward()  # the first forward of a shape also runs the byte counter's dispatch mode
        ops = forward()
        out[(ulysses, ring)] = {"bytes": dict(handle.bytes_sent.last_step), "ops": ops}
        handle.remove()
    return out
