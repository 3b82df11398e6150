"""Training checkpoints: the whole pipeline in diffusers format (safetensors) plus per-rank optimizer state.

    run_dir/checkpoints/step-<phase>-<step>/
        pipeline/             loadable by pipelines.loading.load_pipeline (and so by the render path)
        optimizer/rank<r>.pt  each rank's optimizer state (tensors and numbers only; loaded weights_only)
        state.json            phase, step, workers, stages, boundaries, run id

A checkpoint is written into a hidden folder and renamed when complete, so the last one listed is whole.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

PHASES = ("vae", "unet", "dit")


@dataclass(frozen=True)
class CheckpointState:
    phase: str
    """"vae", "unet" or "dit" (the video model): the phase the step count belongs to."""
    step: int
    """Steps of that phase already done."""
    workers: int
    """World size that wrote it (optimizer state is per rank)."""
    stages: int
    """Pipeline stages that wrote it (optimizer state is per stage)."""
    boundaries: tuple[int, ...] | None = None
    """The UNet phase's stage boundaries: a resumed run must cut the layers the same way, since the
    optimizer state of each rank belongs to its stage's parameters."""
    run_id: str = ""
    """The `tessera train` invocation that wrote it: a worker group Ray Train restarts in that run resumes
    from it without `resume=true` (runtime/training/recovery.py)."""

    @property
    def order(self) -> tuple[int, int]:
        return PHASES.index(self.phase), self.step


def checkpoint_name(phase: str, step: int) -> str:
    return f"step-{PHASES.index(phase)}{phase}-{step:07d}"


def last_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    found = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return found[-1] if found else None


def read_state(checkpoint: Path) -> CheckpointState:
    data = json.loads((checkpoint / "state.json").read_text())
    if data.get("boundaries") is not None:
        data["boundaries"] = tuple(data["boundaries"])
    return CheckpointState(**data)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_full_state(named_modules: dict[str, torch.nn.Module], local: torch.nn.Module) -> dict | None:
    """On rank 0, the full state of `named_modules` with every parameter taken from the rank that trains it.

    `local` is this rank's pipeline stage; its parameters are the same tensors as some of the named
    modules' parameters. Other ranks return None. Replicas hold equal weights, so the first sender wins.
    """
    owner = {
        id(p): f"{prefix}.{name}" for prefix, m in named_modules.items() for name, p in m.named_parameters()
    }
    mine = {owner[id(p)]: p.detach().cpu().clone() for p in local.parameters() if id(p) in owner}
    parts = [None] * dist.get_world_size() if dist.is_initialized() else [mine]
    if dist.is_initialized():
        dist.all_gather_object(parts, mine)
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    merged: dict[str, torch.Tensor] = {}
    for part in parts:
        for name, tensor in part.items():
            merged.setdefault(name, tensor)
    missing = set(owner.values()) - set(merged)
    if missing:
        raise RuntimeError(f"no stage owns {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
    return merged


def load_full_state(named_modules: dict[str, torch.nn.Module], state: dict) -> None:
    for prefix, module in named_modules.items():
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.copy_(own[name])


def write_checkpoint(
    run_dir: Path, state: CheckpointState, save_pipeline, optimizer: torch.optim.Optimizer
) -> Path:
    """Collective: every rank calls it. `save_pipeline(path)` runs on rank 0 only."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    final = Path(run_dir) / "checkpoints" / checkpoint_name(state.phase, state.step)
    partial = final.with_name("." + final.name + ".partial")
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "optimizer").mkdir(parents=True)
    _barrier()
    torch.save(optimizer.state_dict(), partial / "optimizer" / f"rank{rank}.pt")
    if rank == 0:
        save_pipeline(partial / "pipeline")
    _barrier()
    if rank == 0:
        (partial / "state.json").write_text(json.dumps(state.__dict__))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    _barrier()
    return final


def load_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer) -> None:
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = torch.load(checkpoint / "optimizer" / f"rank{rank}.pt", weights_only=True)
    check_optimizer_state(state, optimizer, checkpoint, rank)
    optimizer.load_state_dict(state)


def check_optimizer_state(state: dict, optimizer: torch.optim.Optimizer, checkpoint: Path, rank: int) -> None:
    """Refuse optimizer state that belongs to other parameters, before it is loaded.

    torch matches optimizer state to parameters by position only, so state written by a different
    stage cut or a different layer list (the order of a stage's parameters) loads without complaint
    and fails steps later inside the optimizer with a shape error far from the cause.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = state.get("state", {})
    for index, param in enumerate(params):
        moments = [v for v in saved.get(index, {}).values() if isinstance(v, torch.Tensor) and v.dim() > 0]
        for moment in moments:
            if moment.shape != param.shape:
                raise ValueError(
                    f"resume: the optimizer state of rank {rank} in {checkpoint} belongs to other parameters "
                    f"(parameter {index}: saved {tuple(moment.shape)}, this stage has {tuple(param.shape)}); "
                    "the stage cut or the model's layer list changed since it was written"
                )
    count = sum(len(group["params"]) for group in state["param_groups"])
    if count != len(params):
        raise ValueError(
            f"resume: the optimizer state of rank {rank} in {checkpoint} has {count} parameters, "
            f"this stage {len(params)}"
        )
