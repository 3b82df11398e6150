"""Samplers are diffusers' schedulers, chosen by name and built from the model's own noise schedule.

"pipeline" is the scheduler class the model's directory names, as saved (a flow-matching model's own); the
others are a class of diffusers' over the model's schedule. Which of them fit a model is its family's say
(``ModelFamily.samplers``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Scheduler class names, not classes: validating a job's sampler (cluster/spec.py, on every `tessera submit`)
# should not import diffusers.
SAMPLERS: dict[str, tuple[str | None, dict]] = {
    "pipeline": (None, {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
}


def make_scheduler(name: str, model_schedule: dict) -> SchedulerMixin:
    """A fresh scheduler of kind `name` sharing the model's training noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    class_name, overrides = SAMPLERS[name]
    class_name = class_name or model_schedule["_class_name"]  # "pipeline": the directory's own class
    scheduler_class = getattr(importlib.import_module("diffusers"), class_name)
    return scheduler_class.from_config(dict(model_schedule), **overrides)
