"""How many steps a diffusers scheduler can take on a model's training schedule, read from JSON alone.

A job asking for more denoising steps than its sampler can take would be accepted and then die in a worker:
DDIM refuses more steps than training timesteps in ``set_timesteps``, and with "leading" spacing and a
``steps_offset`` its first timestep runs one past the trained ones (IndexError in ``step``); DPM-Solver++ over
a beta schedule gets two timesteps with one noise level (a zero-length step: NaN); the multistep solvers over
flow sigmas (Sana's DPM-Solver++, Wan's UniPC) round their first two timesteps to one integer, start one step
late and overrun their sigmas. Validating a job imports no diffusers, so the timesteps are computed here as
diffusers 0.42's ``set_timesteps`` computes them (numpy, the same formulas), and each scheduler's failure is
checked where it happens. ``tests/test_sampler_steps.py`` runs the real schedulers on both sides of every limit.

Schedules these formulas do not cover (Karras, exponential, beta or lu sigmas, dynamic shifting, clipped
lambdas) are checked only against the training timestep count; flow-matching Euler takes any step count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.samplers import sampler_class

INDEXED = ("DDIMScheduler", "PNDMScheduler")
"""Schedulers whose ``step`` indexes the training schedule's ``alphas_cumprod`` by timestep."""
MULTISTEP = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
"""Multistep solvers: they find their first step by looking its timestep up, and divide by step lengths."""
FLOW_MATCHING = ("FlowMatchEulerDiscreteScheduler",)
"""Continuous sigmas and float timesteps: any step count works."""
DEFAULT_SPACING = {"DDIMScheduler": "leading", "PNDMScheduler": "leading"}
"""``timestep_spacing`` when the config does not say (the class's default; the others default to linspace)."""
PNDM_ORDER = 4
"""PNDM's Runge-Kutta warm-up steps (without ``skip_prk_steps``): ``set_timesteps`` fails below this many."""
UNMODELLED = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_dynamic_shifting",
    "shift_terminal",
)
"""Config switches whose timesteps are not computed here."""


def scheduler_config(path: str | Path) -> dict[str, Any]:
    """The scheduler config a pipeline directory saved ({} when it has none, or none that reads as a JSON
    object: a broken directory is the loader's to report, with its own error, not a step count's)."""
    config = Path(path) / "scheduler" / "scheduler_config.json"
    try:
        data = json.loads(config.read_text()) if config.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def steps_error(sampler: str, schedule: dict[str, Any], steps: int) -> str | None:
    """Why ``sampler`` over the training ``schedule`` (a scheduler config) cannot take ``steps`` steps, with the
    largest step count below that works; None when it can."""
    name = sampler_class(sampler, schedule)
    problem = _problem(name, schedule, steps)
    if problem is None:
        return None
    fewer = next((n for n in range(steps - 1, 0, -1) if _problem(name, schedule, n) is None), None)
    advice = f"; use at most {fewer}" if fewer is not None else ""
    return f"{name} cannot take {steps} steps on this model's schedule: {problem}{advice}"


def _problem(name: str, config: dict[str, Any], n: int) -> str | None:
    trained = int(config.get("num_train_timesteps", 1000))
    if name in FLOW_MATCHING:
        return None
    spacing = config.get("timestep_spacing", DEFAULT_SPACING.get(name, "linspace"))
    offset = int(config.get("steps_offset", 0))
    modelled = (
        name in (*INDEXED, *MULTISTEP, "EulerDiscreteScheduler")
        and not any(config.get(switch) for switch in UNMODELLED)
        and spacing in ("linspace", "leading", "trailing")
        and not _finite(config.get("lambda_min_clipped"))
        and config.get("timestep_type", "discrete") == "discrete"
    )
    if not modelled or name in INDEXED:  # DDIM refuses more; PNDM repeats its timesteps
        if n > trained:
            return f"the model has {trained} training timesteps"
        if not modelled:
            return None
    where = f"{spacing!r} spacing, steps_offset {offset}"
    if name == "PNDMScheduler" and not config.get("skip_prk_steps", False) and n < PNDM_ORDER:
        return f"its Runge-Kutta warm-up takes {PNDM_ORDER} steps"
    if name in INDEXED:  # (PNDM's Runge-Kutta half steps stay below its first timestep)
        top = int(_spaced(n, trained, spacing, offset).max())
        if top > trained - 1:
            return f"its first timestep {top} is past the last trained timestep {trained - 1} ({where})"
        return None
    if name in MULTISTEP:
        if config.get("use_flow_sigmas"):
            timesteps = _flow_timesteps(name, config, n, trained)
        else:
            # the sigmas are interpolated at the timesteps, clipped to the trained ones: two timesteps at one
            # noise level make a step of length zero, and the higher-order step after it divides by it (UniPC's
            # corrector too, in its last step; DPM-Solver's last step is first order when its final sigma is zero)
            timesteps = np.clip(_spaced(n, trained, spacing, offset, multistep=True), 0, trained - 1)
            first_order_last = name == "DPMSolverMultistepScheduler" and (
                config.get("final_sigmas_type", "zero") == "zero"
                or (config.get("lower_order_final", True) and n < 15)
            )
            pairs = len(timesteps) - 1 - (1 if first_order_last else 0)
            if any(timesteps[i] == timesteps[i + 1] for i in range(pairs)):
                return f"two of its timesteps share one noise level, a step of length zero ({where})"
        if n > 1 and timesteps[0] == timesteps[1]:
            return f"its first two timesteps round to {int(timesteps[0])}, so it starts a step late"
        return None
    timesteps = _spaced(n, trained, spacing, offset, rounded=False)  # Euler
    if n > 1 and timesteps[0] == timesteps[1]:
        return f"its first two timesteps are both {timesteps[0]:g}, so it starts a step late ({where})"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and bool(np.isfinite(value))


def _spaced(n: int, trained: int, spacing: str, offset: int, multistep: bool = False, rounded: bool = True):
    """The descending timesteps diffusers' ``set_timesteps`` spaces for ``n`` steps; the multistep solvers space
    ``n + 1`` points and drop the last (linspace, leading); Euler keeps its linspace points unrounded."""
    if spacing == "linspace":
        if multistep:
            return np.linspace(0, trained - 1, n + 1).round()[::-1][:-1]
        values = np.linspace(0, trained - 1, n, dtype=np.float64 if rounded else np.float32)
        return (values.round() if rounded else values)[::-1]
    if spacing == "leading":
        points = n + 1 if multistep else n
        values = (np.arange(0, points) * (trained // points)).round()[::-1] + offset
        return values[:-1] if multistep else values
    return np.round(np.arange(trained, 0, -trained / n)) - 1  # trailing


def _flow_timesteps(name: str, config: dict, n: int, trained: int):
    """The integer timesteps of a multistep solver over flow sigmas (``use_flow_sigmas``)."""
    shift = float(config.get("flow_shift", 1.0))
    if name == "DPMSolverMultistepScheduler":
        sigmas = 1.0 - np.linspace(1, 1 / trained, n + 1)
        sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1]
    else:  # UniPC
        sigmas = np.linspace(1, 1 / trained, n + 1)[:-1]
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        if abs(sigmas[0] - 1) < 1e-6:
            sigmas[0] -= 1e-6
    return (sigmas * trained).astype(np.int64)
