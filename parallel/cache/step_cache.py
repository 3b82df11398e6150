"""What a render session drives around each denoising step, whatever the cache mode.

Every worker of a job makes the same decision at the same step: static schedules are pure functions of the
step index (``full_by_schedule``), and a measured change is summed over the job's process group before it
is compared (``group_relative_change``), never decided per band or per guidance branch.

A cache's state (features of the last full step) is not part of a checkpoint: a session that stops keeps the
render state from just before its last full step and hands that one out, so the job resumes by re-running
that full step, which rebuilds the cache exactly as the uninterrupted job had it (at most ``max_skips`` + 1
steps computed twice). Its decisions afterwards are those of the uninterrupted job.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist

from parallel.cache.config import CacheConfig


class StepCache(Protocol):
    """A cache attached to one denoiser for one render segment."""

    def begin_step(self, step: int) -> None:
        """The denoiser is about to run step ``step`` (0-based within the job)."""

    def end_step(self) -> bool:
        """The step is done: whether it computed in full (its features are the cache's now)."""

    def report(self) -> dict:
        """What metadata.json records: the mode, the full and the reusing steps."""

    def close(self) -> None:
        """Remove the cache from the denoiser (its hooks) and drop what it holds."""


def full_by_schedule(config: CacheConfig, step: int, first: int) -> bool:
    """A static schedule's decision: the first ``warmup_steps`` of a segment (starting at step ``first``) and
    then every ``interval``-th step run in full."""
    since = step - first
    if since < config.warmup_steps:
        return True
    return (since - config.warmup_steps) % max(1, config.interval) == 0


def group_relative_change(change: torch.Tensor, reference: torch.Tensor) -> float:
    """sum |change| / sum |reference|, each summed over every worker of the job's default process group (the
    same number on every worker; bands of any size weigh by their elements, as one device's mean would)."""
    sums = torch.stack([change.abs().sum(), reference.abs().sum()]).to(torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sums = sums.cpu() if dist.get_backend() == "gloo" else sums
        dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp_min(1e-30))


class StepRecord:
    """The full and reusing steps of one segment, for the report."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.full: list[int] = []
        self.reused: list[int] = []

    def add(self, step: int, full: bool) -> None:
        (self.full if full else self.reused).append(step)

    def report(self) -> dict:
        return {"mode": self.mode, "full_steps": list(self.full), "reused_steps": list(self.reused)}
