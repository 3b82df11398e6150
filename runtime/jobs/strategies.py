"""The strategy table: which parallel strategies each job kind runs, and where a worker sets each one up.

A job spec accepts exactly the strategies listed here for its kind (``cluster.jobs``), and a worker's
session looks its strategy's set-up up here, by ``module:function`` (imported on first use, so that
validating a spec loads no strategy code). Adding a strategy is its module (mechanics in ``parallel/``,
the worker glue in ``runtime/jobs/``), one line here, the checks of its fields in the kind's spec
(``cluster.jobs.image.STRATEGY_CHECKS``), and, when it follows a model's layers, a plan in each model family
that can run it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    setup: str | None
    """``module:function`` a worker sets the strategy up with (imported on first use); None: nothing to set up."""
    needs_plan: bool
    """Whether the model's family must have a plan for it (bands follow a model's layers; others need none)."""


IMAGE_STRATEGIES: dict[str, Strategy] = {
    "none": Strategy(None, needs_plan=False),
    "patch": Strategy("runtime.jobs.image_patch:setup_patch", needs_plan=True),  # row bands, CFG split on request
    "sequence": Strategy("runtime.jobs.image_sequence:setup_sequence", needs_plan=True),  # diffusers' Ulysses/Ring
    "steps": Strategy("runtime.jobs.image_steps:setup_steps", needs_plan=False),  # ParaStep: adjacent steps at once
}
"""Image strategies: set-up(pipe, conditioning, parallel spec, latent rows) -> the worker's set-up, which has
``predictor`` (band latent, t -> guided noise), ``rows`` (this worker's latent rows), ``band_index``,
``resume(step)``, ``report()`` (for metadata.json) and ``close()`` (undo its changes to the model)."""

VIDEO_STRATEGIES: tuple[str, ...] = ("none", "frames", "sequence", "patch", "auto")
"""Video strategies: every video runs through the frame pipeline (``runtime.jobs.video_session``), on one
stage ("none"), on ``parallel.degree`` stages ("frames", layer-and-frame pipelining, DualParal), or as one
block whose every forward is split over ``parallel.degree`` workers: by diffusers' context parallelism
("sequence", Ulysses; the family's ``sequence_adapter``) or in row bands of every frame ("patch", the family's
``band_adapter`` under its ``patch_plan``). "auto" (with degree "auto"): the scheduler picks one of the
family's for each placement (``cluster.jobs.video``); a worker never sees "auto" itself."""
WHOLE_VIDEO: tuple[str, ...] = ("sequence", "patch")
"""Video strategies that render the whole video as one block, every worker running the whole queue."""


def strategy_setup(table: dict[str, Strategy], name: str) -> Callable | None:
    """The set-up function of strategy ``name`` in ``table`` (None: nothing to set up)."""
    target = table[name].setup
    if target is None:
        return None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)
