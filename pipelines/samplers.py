"""Samplers are diffusers' schedulers, chosen by name and built from the model's own noise schedule.

"pipeline" is the scheduler class the model's directory names, as saved (a flow-matching model's own); the
others are a class of diffusers' over the model's schedule. Which of them fit a model is its family's say
(``ModelFamily.samplers``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def sampler_class(sampler: str, schedule: dict[str, Any]) -> str:
    """The scheduler class ``make_scheduler`` builds for ``sampler`` on ``schedule``."""
    class_name, _ = SAMPLERS[sampler]
    return class_name or schedule.get("_class_name", "")


def make_scheduler(name: str, model_schedule: dict) -> SchedulerMixin:
    """A fresh scheduler of kind `name` sharing the model's training noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    class_name, overrides = SAMPLERS[name]
    class_name = class_name or model_schedule["_class_name"]  # "pipeline": the directory's own class
    scheduler_class = getattr(importlib.import_module("diffusers"), class_name)
    return scheduler_class.from_config(dict(model_schedule), **overrides)


BETA_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "rescale_betas_zero_snr": False,
}
"""The config fields that fix a beta-schedule model's training noise levels, with diffusers' defaults (the same in
every beta-schedule scheduler class ``SAMPLERS`` names)."""


def is_flow_matching(model_schedule: dict) -> bool:
    """Whether a scheduler config describes a flow-matching model (a ``FlowMatch*`` class, or a multistep solver
    over flow sigmas, as Sana's DPM-Solver++) rather than one trained on a beta schedule."""
    return (
        "FlowMatch" in str(model_schedule.get("_class_name", ""))
        or bool(model_schedule.get("use_flow_sigmas"))
        or model_schedule.get("prediction_type") == "flow_prediction"
    )


def sampling_traits(name: str, model_schedule: dict) -> dict[str, Any]:
    """How sampler ``name`` steps a model with scheduler config ``model_schedule``, read from JSON: the scheduler
    class it builds, the config it builds it from, and what the denoiser was trained for (its prediction and noise
    levels, with diffusers' defaults where the config leaves them out, so a flow-matching model, whose config names
    no prediction, differs from an epsilon one). A job's later segment rebuilds its scheduler from its own model's
    config and loads the sampler state the earlier segment left over it, so the two must agree on all of it."""
    config = {key: value for key, value in model_schedule.items() if not key.startswith("_")}
    if is_flow_matching(model_schedule):
        trained = {"prediction_type": model_schedule.get("prediction_type") or "flow_prediction"}
        trained["num_train_timesteps"] = model_schedule.get("num_train_timesteps", 1000)
    else:
        trained = {"prediction_type": model_schedule.get("prediction_type") or "epsilon"}
        trained |= {key: model_schedule.get(key, default) for key, default in BETA_SCHEDULE.items()}
    return {"scheduler": sampler_class(name, model_schedule), **config, **trained}
