"""Shared by the real-run traffic tests: one spawn per (function, world), and tiny-model profiles."""

from __future__ import annotations

import copy
from typing import Any

import _parallel_models as M
import _parallel_workers as W
import torch
from _parallel_dist import run_ranks

from parallel.cost.profile import ModelProfile, profile_module

_runs: dict[tuple[str, int], list[Any]] = {}


def run(fn: Any, world: int) -> list[Any]:
    if (fn.__name__, world) not in _runs:
        _runs[(fn.__name__, world)] = run_ranks(fn, world, timeout=120)
    return _runs[(fn.__name__, world)]


def tiny_profile(name: str, batch: int = 2) -> ModelProfile:
    """Profile of a tiny test model on the meta device, for the full (unsplit) latent."""
    build, shape, _ = W.MODELS[name]
    model = copy.deepcopy(build()).to("meta")
    x = torch.empty((batch,) + shape[1:], device="meta")
    text = torch.empty(batch, M.TEXT_LEN, M.TEXT_DIM, device="meta")
    t = torch.tensor(500, device="meta")
    if name == "pixart":
        kwargs = {
            "encoder_hidden_states": text,
            "timestep": t.expand(batch),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        }
        return profile_module(model, (x,), kwargs, kind="dit")
    return profile_module(model, (x, t), {"encoder_hidden_states": text}, kind="unet")


def measured(step: dict, kind: str) -> int:
    """Bytes of one kind summed over peers."""
    return sum(step.get(kind, {}).values())
