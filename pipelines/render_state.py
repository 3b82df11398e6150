"""A denoising loop's state as plain data: what a checkpoint holds, and how bands combine into it.

The state is the latent, the step index, the scheduler's mutable fields (its multistep history
included) and the generator's RNG state. Tensors shaped like the latent band (the latent itself,
DPM-Solver's model outputs, a TaylorSeer cache's factors...) are stitched along rows into full-image tensors, so a checkpoint taken
on N bands resumes on any other number of bands. The displaced-mode activation cache is not state.
"""

from __future__ import annotations

from typing import Any

import torch

_SCALARS = (int, float, bool, str, type(None))


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's mutable fields that a fresh set_timesteps() would not restore by itself."""
    state: dict[str, Any] = {}
    for name, value in vars(scheduler).items():
        if name in ("config", "_internal_dict"):
            continue
        if isinstance(value, torch.Tensor):
            state[name] = value.detach().cpu().clone()
        elif isinstance(value, _SCALARS):
            state[name] = value
        elif isinstance(value, list) and all(isinstance(v, (torch.Tensor, *_SCALARS)) for v in value):
            state[name] = [v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for v in value]
    return state


def load_scheduler_state(scheduler: Any, state: dict[str, Any], device: torch.device | str) -> None:
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, list):
            value = [v.to(device) if isinstance(v, torch.Tensor) else v for v in value]
        setattr(scheduler, name, value)


def _is_band(value: Any, band_shape: torch.Size) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == band_shape


def stitch_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One full-image state from the states of bands 0..N-1 (each with its "rows" and "latents")."""
    states = sorted(states, key=lambda s: s["rows"][0])
    first = states[0]
    if len({s["step_index"] for s in states}) != 1:
        raise ValueError(f"bands are at different steps: {[s['step_index'] for s in states]}")

    def merge(values: list[Any], band_shapes: list[torch.Size]) -> Any:
        if _is_band(values[0], band_shapes[0]):
            return torch.cat(values, dim=2)
        if isinstance(values[0], list):
            return [merge([v[i] for v in values], band_shapes) for i in range(len(values[0]))]
        if isinstance(values[0], dict):
            return {key: merge([v[key] for v in values], band_shapes) for key in values[0]}
        return values[0]

    shapes = [s["latents"].shape for s in states]
    scheduler = {k: merge([s["scheduler"][k] for s in states], shapes) for k in first["scheduler"]}
    stitched = {
        "step_index": first["step_index"],
        "rows": [states[0]["rows"][0], states[-1]["rows"][1]],
        "latents": torch.cat([s["latents"] for s in states], dim=2),
        "scheduler": scheduler,
        "generator": first["generator"],
    }
    if "step_cache" in first:  # a checkpointed step cache's tensors are shaped like the band, as the scheduler's
        stitched["step_cache"] = merge([s["step_cache"] for s in states], shapes)
    # what else a session keeps (a cache calibration, step parallelism's round): the same on every worker
    stitched.update({key: value for key, value in first.items() if key not in stitched})
    return stitched


def slice_state(full: dict[str, Any], rows: tuple[int, int]) -> dict[str, Any]:
    """The band of a full-image state that covers `rows`."""
    full_shape = full["latents"].shape

    def cut(value: Any) -> Any:
        if _is_band(value, full_shape):
            return value[:, :, rows[0] : rows[1]].clone()
        if isinstance(value, list):
            return [cut(v) for v in value]
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        return value

    state = {
        "step_index": full["step_index"],
        "rows": list(rows),
        "latents": cut(full["latents"]),
        "scheduler": {k: cut(v) for k, v in full["scheduler"].items()},
        "generator": full["generator"],
    }
    if "step_cache" in full:
        state["step_cache"] = cut(full["step_cache"])
    return state
