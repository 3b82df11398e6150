"""Glue between a render and patch parallelism: patch the denoiser as its family's plan says, pick this
worker's band, guide.

Runs inside a worker whose default process group is the job's group. With CFG parallel the group's
first half runs the conditional branch and the second half the unconditional one, each half split
in the same row bands (parallel/patch/cfg.py); otherwise every worker runs both branches batched on its band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from parallel.patch.bands import band_bounds
from parallel.patch.cfg import CFGLayout, combine_cfg, make_cfg_groups
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import parallelize_patch
from parallel.patch.runtime import PatchHandle
from pipelines.families import Conditioning
from pipelines.sampling import NoisePredictor, batched_cfg_predictor, denoiser


@dataclass
class PatchSetup:
    handle: PatchHandle
    """The patched denoiser's counters; `remove()` restores the cached model."""
    predictor: NoisePredictor
    """(band latent, t) -> guided noise for this band."""
    rows: tuple[int, int]
    """This worker's latent rows."""
    band_index: int
    """Which band this worker holds (equal for the two CFG partners)."""
    cfg: CFGLayout | None
    """The CFG layout, when the branches are split."""

    def bytes_sent(self) -> dict[str, dict[int, int]]:
        """Cumulative bytes by kind and peer (global rank), patch and CFG exchanges together."""
        return with_cfg_bytes(self.handle.bytes_sent.total, self.cfg)

    # --- what a render session asks of its strategy (runtime.jobs.strategies) ----------------------------
    def resume(self, step: int) -> None:
        """Stale activations are a cache, not state: after a resume the next step refills them synchronously."""
        self.handle.reset(step)

    def report(self) -> dict:
        return {"bytes_sent": self.bytes_sent(), "branch": self.cfg.branch if self.cfg else "both"}

    def close(self) -> None:
        """Restore the cached denoiser to its unpatched self."""
        self.handle.remove()


def with_cfg_bytes(sent: dict[str, dict[int, int]], cfg: CFGLayout | None) -> dict[str, dict[int, int]]:
    """A strategy's cumulative bytes by kind and peer, with the CFG exchange's added when the branches are split."""
    total = {kind: dict(peers) for kind, peers in sent.items()}
    if cfg is not None:
        for kind, peers in cfg.comm.bytes_sent().total.items():
            total.setdefault(kind, {}).update(peers)
    return total


def setup_patch(pipe, cond: Conditioning, par: Any, latent_rows: int) -> PatchSetup:
    """``par``: the placed spec's parallel fields (strategy patch; mode, warmup, stale dtype, K/V source, cfg)."""
    group = dist.group.WORLD
    if par.cfg:
        layout = make_cfg_groups(group)
        patch_group, band_index, bands = layout.patch_group, layout.patch_rank, layout.patch_degree
    else:
        layout = None
        patch_group, band_index, bands = group, dist.get_rank(), dist.get_world_size()
    config = PatchConfig(
        mode=par.mode, warmup_steps=par.warmup_steps, stale_dtype=par.stale_dtype, kv_source=par.kv_source
    )
    model = denoiser(pipe)
    plan = cond.family.patch_plan(model, config)
    handle = parallelize_patch(model, patch_group, plan, config)
    rows = band_bounds(latent_rows, bands, plan.align)[band_index]
    if layout is None:
        predictor = batched_cfg_predictor(model, cond)
    else:
        predictor = split_cfg_predictor(model, cond, layout)
    return PatchSetup(handle, predictor, rows, band_index, layout)


def split_cfg_predictor(model: torch.nn.Module, cond: Conditioning, layout: CFGLayout) -> NoisePredictor:
    """This worker's guidance branch through ``model``, guided with its partner's (``parallel.patch.cfg``)."""
    family, inputs = cond.family, cond.branch(layout.is_cond)

    def predict(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noise = family.denoise(model, latent, t, inputs, cond)
        return family.noise(model, combine_cfg(noise, layout, cond.guidance_scale, family.combine_guidance))

    return predict
