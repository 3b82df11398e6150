"""The strategy table: which parallel strategies each job kind runs, and where a worker sets each one up.

A job spec accepts exactly the strategies listed here for its kind (``cluster.jobs``), and a worker's
session looks its strategy's set-up up here. An entry names ``module:function`` (imported on first use,
so that validating a spec loads no strategy code); None runs the model on one worker unchanged. Adding a
strategy is its module (mechanics in ``parallel/``, the worker glue in ``runtime/jobs/``) and one line
here, plus a plan in each model family that can run it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

IMAGE_STRATEGIES: dict[str, str | None] = {
    "none": None,
    "patch": "runtime.jobs.image_patch:setup_patch",  # row bands (DistriFusion), CFG branches split on request
}
"""Image strategies: set-up(pipe, conditioning, parallel spec, latent rows) -> the worker's set-up, which has
``predictor`` (band latent, t -> guided noise), ``rows`` (this worker's latent rows), ``band_index``,
``resume(step)``, ``report()`` (for metadata.json) and ``close()`` (undo its changes to the model)."""

VIDEO_STRATEGIES: tuple[str, ...] = ("none", "frames")
"""Video strategies: every video runs through the frame pipeline (``runtime.jobs.video_session``), on one
stage ("none") or on ``parallel.degree`` stages ("frames", layer-and-frame pipelining, DualParal)."""


def strategy_setup(table: dict[str, str | None], name: str) -> Callable | None:
    """The set-up function of strategy ``name`` in ``table`` (None: nothing to set up)."""
    target = table[name]
    if target is None:
        return None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)
