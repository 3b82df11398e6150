"""The per-worker training function run by Ray Train (one process per worker, torch.distributed set up).

`train_worker` sets up the worker (device, threads, DeepSpeed's distributed init), finds the checkpoint to
start from (runtime/training/recovery.py) and runs the model's phases: an image model's VAE then UNet
(runtime/training/image.py), or a video model's DiT (runtime/training/video.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.device import device_slot
from runtime.training.config import TrainConfig
from runtime.training.engine import skip_deepspeed_shm_op
from runtime.training.image import train_image
from runtime.training.recovery import resume_point, write_pid
from runtime.training.video import train_video


def is_video_model(name_or_path: str) -> bool:
    """Whether the model's family renders videos (its training phase is the video DiT's)."""
    from pipelines.builtin import resolve_model
    from pipelines.families import family_for_dir

    return family_for_dir(resolve_model(name_or_path)).job == "video"


def train_worker(config: dict) -> None:
    """Ray Train's train_loop_per_worker."""
    import ray.train
    import ray.train.torch

    run_worker(TrainConfig(**config), ray.train.get_context().get_world_rank(), ray.train.torch.get_device())


def run_worker(cfg: TrainConfig, rank: int, device: torch.device) -> None:
    """One worker's training, in a process whose torch.distributed environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) is set: Ray Train's worker, or any process started so."""
    import deepspeed

    slot = device_slot("cuda" if device.type == "cuda" else "cpu")
    torch.set_num_threads(slot.torch_threads)
    skip_deepspeed_shm_op()
    deepspeed.init_distributed(dist_backend=slot.backend, verbose=False)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    write_pid(Path(cfg.run_dir), rank)
    checkpoint, state = resume_point(cfg)
    if rank == 0 and checkpoint is not None:
        print(f"resuming from {checkpoint}", flush=True)
    if is_video_model(cfg.model):
        train_video(cfg, checkpoint, state, rank, device)
    else:
        train_image(cfg, checkpoint, state, rank, device)
