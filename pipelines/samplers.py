"""Samplers are diffusers' schedulers, chosen by name and built from the model's own noise schedule."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Scheduler class names, not classes: validating a job's sampler (cluster/spec.py, on every `tessera submit`)
# should not import diffusers.
SAMPLERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}


def make_scheduler(name: str, model_schedule: dict) -> SchedulerMixin:
    """A fresh scheduler of kind `name` sharing the model's training noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    class_name, overrides = SAMPLERS[name]
    scheduler_class = getattr(importlib.import_module("diffusers"), class_name)
    return scheduler_class.from_config(dict(model_schedule), **overrides)
