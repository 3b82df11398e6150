"""Wan 2.2's two-expert A14B layout: a high-noise and a low-noise ``WanTransformer3DModel`` as one module.

diffusers' ``WanPipeline`` (and ``WanImageToVideoPipeline``) with ``transformer_2`` and ``boundary_ratio`` runs
``transformer`` at every timestep ``t >= boundary_ratio * num_train_timesteps`` and ``transformer_2`` below it.
The frame plan (``pipelines.families.wan.frames``) asks ``expert(t)`` once per step and runs that expert's
embedding, blocks and head; this module only holds the pair, so the frame pipeline (which takes one model) and
the rest of the video path see one transformer. Both experts share one architecture (the layout's own
guarantee: diffusers swaps them in the same loop), so ``config`` is the high-noise expert's.

A one-block video job runs the experts as two step segments (``expert_steps``; ``cluster.jobs.video``): the
high-noise steps, a checkpoint at that tick, then the low-noise steps wherever the scheduler places them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class WanExperts(nn.Module):
    """The high-noise expert, the low-noise expert and the timestep at which the pipeline switches."""

    def __init__(self, high: nn.Module, low: nn.Module, boundary_timestep: float) -> None:
        super().__init__()
        if high.config.num_layers != low.config.num_layers or tuple(high.config.patch_size) != tuple(
            low.config.patch_size
        ):
            raise ValueError("model: the two experts of a Wan 2.2 pipeline must share their architecture")
        self.high = high
        self.low = low
        self.boundary_timestep = float(boundary_timestep)
        """``boundary_ratio * num_train_timesteps``: ``high`` at or above it, ``low`` below (diffusers' rule)."""

    @property
    def config(self):
        return self.high.config

    @property
    def dtype(self) -> torch.dtype:
        return self.high.dtype

    @property
    def device(self) -> torch.device:
        return self.high.device

    @property
    def experts(self) -> tuple[nn.Module, nn.Module]:
        return (self.high, self.low)

    def expert(self, timestep: torch.Tensor | float) -> nn.Module:
        """The expert diffusers runs at ``timestep``."""
        value = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        return self.high if value >= self.boundary_timestep else self.low


def expert_steps(path: str | Path, index: dict, steps: int) -> int:
    """How many of a ``steps``-step schedule the high-noise expert runs: the timesteps at or above the boundary,
    from the scheduler the directory names, its timesteps set as the frame pipeline sets them (read at submit)."""
    import diffusers

    config = json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, index["scheduler"][1]).from_config(config)
    scheduler.set_timesteps(steps)
    boundary = float(index["boundary_ratio"]) * int(scheduler.config.num_train_timesteps)
    return int((scheduler.timesteps >= boundary).sum())
