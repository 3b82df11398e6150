"""Samplers are diffusers' schedulers, chosen by name and built from the model's own noise schedule."""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


def make_scheduler(name: str, model_schedule: dict) -> SchedulerMixin:
    """A fresh scheduler of kind `name` sharing the model's training noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    scheduler_class, overrides = SAMPLERS[name]
    return scheduler_class.from_config(dict(model_schedule), **overrides)
