"""DeepSpeed for every training phase: its config, its set-up on a worker, and the pipeline engine of a phase.

The image phases (VAE data-parallel, UNet pipeline) and the video phase (DiT pipeline) all build their engines here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from runtime.training.checkpoint import load_optimizer
from runtime.training.config import TrainConfig


def deepspeed_config(micro_batch: int, accumulation: int, lr: float, clipping: float = 1.0) -> dict:
    """DeepSpeed's config for every phase: fp32, AdamW from torch (no FusedAdam build), no ZeRO."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0, "torch_adam": True}},
        "gradient_clipping": clipping,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def skip_deepspeed_shm_op() -> None:
    """Keep DeepSpeed's CPU backend from building its shared-memory all-reduce op at init_distributed.

    The op is compiled with ninja on first use on a machine (about 30 s) and only serves DeepSpeed's
    `inference_all_reduce`; pipeline and data-parallel training reduce through torch.distributed (gloo
    here). A run killed while compiling it also leaves torch's build lock file behind, and every later
    init then waits on that lock forever (seen here). DeepSpeed skips ops marked incompatible."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


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
