"""Shared by the real-run traffic tests: one spawn per (function, world), and tiny-model profiles."""

from __future__ import annotations

import copy
from typing import Any

import _parallel_models as M
import _parallel_workers as W
import torch
from _parallel_dist import run_ranks

from parallel.cost.models import ModelSpec, with_defaults
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


def tiny_flux_spec(model: torch.nn.Module, text_tokens: int, batch: int) -> ModelSpec:
    """A tiny Flux transformer described for the cost model as the Flux family describes a directory (its own
    config, packed 2x2 tokens), with latent rows and columns given as the image's "pixels" (VAE factor 1)."""
    config = with_defaults("FluxTransformer2DModel", dict(model.config))
    return ModelSpec(
        "tiny-flux",
        "FluxTransformer2DModel",
        config,
        "mmdit-ids",
        latent_channels=config["in_channels"] // 4,
        vae_scale=1,
        text_len=text_tokens,
        text_dim=config["joint_attention_dim"],
        dtype="float32",
        extra={"pooled_projections": config["pooled_projection_dim"]},
        packing=2,
        batch=batch,
    )
