"""A 1-worker training run as Ray Train's worker runs it, in one plain gloo process instead of under Ray Train.

The 1-stage reference runs the parity checks compare a Ray Train run against need no Ray: the same worker
function (``runtime.training.worker.run_worker``) in one process of a real gloo group gives the same records,
without Ray Train's 15-20 s of start-up per run on this machine. The runs that claim distributed behaviour
(2 stages, a restarted worker group) stay on Ray Train."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parallel"))

from _parallel_dist import run_ranks  # noqa: E402

from cluster.train import prepare_run, read_metrics  # noqa: E402
from runtime.training.config import TrainConfig  # noqa: E402


def _one_worker(rank: int, world: int, config: dict) -> None:
    import torch

    from runtime.training.worker import run_worker

    # DeepSpeed's init_distributed takes the gloo group already up; LOCAL_RANK and the rest as Ray Train sets them
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    run_worker(TrainConfig(**config), rank, torch.device("cpu"))


def run_one_worker_training(config: TrainConfig, timeout: float = 600) -> list[dict]:
    """``cluster.train.run_training``'s records for a 1-worker CPU config, run in one plain process."""
    if config.workers != 1 or config.device != "cpu":
        raise ValueError("a plain-process run is the 1-worker CPU reference")
    already = prepare_run(config)
    run_ranks(_one_worker, 1, config.to_dict(), timeout=timeout)
    return read_metrics(config.run_dir)[already:]
