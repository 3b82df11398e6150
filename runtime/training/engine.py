"""The DeepSpeed pipeline engine of one training phase, shared by the image (UNet) and video (DiT) phases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from runtime.training.checkpoint import load_optimizer
from runtime.training.config import TrainConfig


def pipeline_engine(
    cfg: TrainConfig,
    stage,
    layers: Sequence[nn.Module],
    loss_fn: Callable[..., torch.Tensor],
    profile_inputs: Callable[[], tuple[torch.Tensor, ...]],
    rank: int,
    resume_from: Path | None = None,
    resume_boundaries: tuple[int, ...] | None = None,
) -> tuple[nn.Module, object, torch.optim.Optimizer, list[int]]:
    """(module, engine, optimizer, boundaries) for ``layers`` cut into ``cfg.stages`` stages.

    The cut comes from the checkpoint on a resume (the optimizer state belongs to it), else from the
    layers' measured forward+backward times on ``profile_inputs()``, agreed by all ranks. ``stage`` is
    the phase's config (micro-batches, learning rate, clipping, activation checkpointing).
    """
    import deepspeed

    from parallel.training.module import build_pipeline_module
    from parallel.training.partition import agree_on_costs, balanced_boundaries, profile_layer_costs
    from runtime.training.image import deepspeed_config

    if resume_boundaries is not None:
        boundaries = list(resume_boundaries)
        if rank == 0:
            print(f"pipeline boundaries {boundaries} (from the checkpoint)", flush=True)
    else:
        costs = agree_on_costs(profile_layer_costs(layers, profile_inputs()))
        boundaries = balanced_boundaries(costs, cfg.stages)
        if rank == 0:
            shares = [round(sum(costs[a:b]) / sum(costs), 3) for a, b in zip(boundaries, boundaries[1:])]
            print(f"pipeline boundaries {boundaries}, measured cost shares {shares}", flush=True)
    module = build_pipeline_module(layers, boundaries, loss_fn, stage.activation_checkpoint_interval)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=[p for p in module.parameters() if p.requires_grad],
        config=deepspeed_config(stage.micro_batch, stage.micro_batches, stage.lr, stage.gradient_clipping),
    )
    if resume_from is not None:
        load_optimizer(resume_from, optimizer)
    return module, engine, optimizer, boundaries
