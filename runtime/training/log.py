"""Rank 0's per-step training log: run_dir/metrics.jsonl, a progress bar on the driver, a line now and then."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.training.config import TrainConfig


class StepLog:
    """Rank 0's per-step log: metrics.jsonl, a progress bar on the driver, a line every `every` steps."""

    def __init__(self, cfg: TrainConfig, phase: str, total: int, start: int, rank: int) -> None:
        self.rank, self.phase, self.every = rank, phase, cfg.log_every
        self.file = Path(cfg.run_dir) / "metrics.jsonl"
        self.bar = None
        if rank == 0 and cfg.progress:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(total=total, desc=f"train {phase}")
            if start:
                self.bar.update(start)

    def __call__(self, step: int, loss: float, samples: int, seconds: float, **extra: float) -> None:
        if self.rank != 0:
            return
        record = {
            "phase": self.phase,
            "step": step,
            "loss": loss,
            "samples_per_s": samples / seconds,
            **extra,
        }
        with self.file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_description(
                f"train {self.phase} loss {loss:.4f} {record['samples_per_s']:.1f} samples/s"
            )
        if step % self.every == 0:
            print(
                f"[{self.phase}] step {step} loss {loss:.5f} {record['samples_per_s']:.1f} samples/s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
