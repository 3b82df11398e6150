"""`tessera train`: a Hydra config turned into a TrainConfig and run as a Ray Train job (TorchTrainer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runtime.training.config import DitStage, TrainConfig, UnetStage


def train_config_from_hydra(cfg: DictConfig) -> tuple[TrainConfig, str | None]:
    """The TrainConfig of a composed configs/train.yaml, and the Ray address to join (None: local)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    pool, parallel, model = data.pop("pool"), data.pop("parallel"), data.pop("model")
    unet = dict(
        data.pop("unet"),
        activation_checkpoint_interval=parallel.get("activation_checkpoint_interval", 0),
        bubble_filling=parallel.get("bubble_filling", False),
        bubble_filling_nice=parallel.get("bubble_filling_nice", 10),
    )
    dit = dict(
        data.pop("dit", {}), activation_checkpoint_interval=parallel.get("activation_checkpoint_interval", 0)
    )
    config = TrainConfig(
        **data,
        model=model["name"],
        workers=pool["workers"],
        device=pool["device"],
        stages=parallel["stages"],
        unet=UnetStage(**unet),
        dit=DitStage(**dit),
    )
    return config, pool.get("address")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rank 0's per-step records (phase, step, loss, samples_per_s) of a run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def prepare_run(config: TrainConfig) -> int:
    """Make the run directory (absolute), start its metrics afresh unless resuming, and give the invocation its
    run id; returns the metrics records already there."""
    from runtime.training.recovery import new_run_id

    config.run_dir = str(Path(config.run_dir).resolve())
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    metrics = Path(config.run_dir) / "metrics.jsonl"
    if not config.resume and metrics.exists():
        metrics.unlink()
    config.run_id = new_run_id()  # checkpoints of this invocation: where a restarted worker group resumes
    return len(read_metrics(config.run_dir))


def run_training(config: TrainConfig, address: str | None = None) -> list[dict]:
    """Run the job on Ray Train; returns the metrics records written by this run."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from runtime.device import device_slot, resolve_device_kind
    from runtime.ray_session import ray_session
    from runtime.training.worker import train_worker

    already = prepare_run(config)
    with ray_session(address) as resources:
        kind = resolve_device_kind(config.device, resources.get("GPU", 0), config.workers)
        slot = device_slot(kind)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config=config.to_dict(),
            scaling_config=ray.train.ScalingConfig(
                num_workers=config.workers,
                use_gpu=kind == "cuda",
                resources_per_worker=dict(slot.ray_resources),
            ),
            torch_config=TorchConfig(backend=slot.backend),
            run_config=ray.train.RunConfig(
                name="ray",
                storage_path=config.run_dir,
                failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
                worker_runtime_env={"env_vars": _worker_env()},
            ),
        )
        trainer.fit()
    return read_metrics(config.run_dir)[already:]


def _worker_env() -> dict:
    """Workers import this repository's packages and keep torch to the threads we set."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{root}:{path}" if path else root, "OMP_NUM_THREADS": "1"}


def train_command(overrides: list[str], print_config: bool) -> int:
    """The `tessera train` subcommand: compose configs/train.yaml with overrides, validate, run."""
    import sys

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cluster.config import compose

    try:
        cfg = compose("train", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"tessera: bad override: {err}", file=sys.stderr)
        return 2
    if print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        config, address = train_config_from_hydra(cfg)
    except (ValueError, TypeError, OmegaConfBaseException) as err:
        print(f"tessera: invalid training job: {err}", file=sys.stderr)
        return 2
    records = run_training(config, address)
    last = records[-1] if records else {}
    print(json.dumps({"run_dir": config.run_dir, "steps_logged": len(records), "last": last}))
    return 0
