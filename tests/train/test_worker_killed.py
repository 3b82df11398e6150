"""A Ray Train worker SIGKILLed mid-training: Ray Train restarts the group, which resumes from the last
checkpoint, and the loss curve continues as in an uninterrupted run (real Ray, DeepSpeed pipeline, gloo).

The steps between the last checkpoint and the kill run twice: before the kill as an uninterrupted run
does, and again after the restart. Their losses must agree; no separate reference run is needed (that
resume equals an uninterrupted run over whole runs is tests/train/test_train_ray.py's check)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from cluster.train import run_training
from runtime.training.config import TrainConfig, UnetStage, VaeStage

pytestmark = pytest.mark.slow

STEPS, EVERY, KILL_AFTER = 7, 3, 5


def _config(run_dir: Path) -> TrainConfig:
    return TrainConfig(
        workers=2,
        stages=2,
        device="cpu",
        seed=7,
        run_dir=str(run_dir),
        checkpoint_every=EVERY,
        max_failures=1,
        progress=False,
        vae=VaeStage(steps=0),
        unet=UnetStage(
            steps=STEPS, micro_batch=2, micro_batches=3, resolution=32, cache_size=12, warmup_steps=1, lr=2e-3,
            # Stage cuts are measured and may differ between the two runs; DeepSpeed clips per stage.
            gradient_clipping=0.0,
        ),
    )


def _logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written
    return steps


def _kill_rank_mid_training(run_dir: Path, rank: int, deadline_s: float = 600) -> tuple[int, int]:
    """SIGKILL `rank`'s process once step KILL_AFTER is logged; returns (pid killed, last step logged)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        steps = _logged_steps(run_dir)
        if steps and steps[-1] >= KILL_AFTER:
            pid = int((run_dir / "workers" / f"rank{rank}.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            return pid, steps[-1]
        time.sleep(0.02)
    raise TimeoutError(f"step {KILL_AFTER} was never logged")


def _loss_per_step(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if r["phase"] == "unet"}  # later records win


def test_killed_worker_resumes_from_last_checkpoint_and_losses_continue(ray_local, tmp_path):
    run_dir = tmp_path / "killed"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(records=run_training(_config(run_dir))))
    thread.start()
    killed_pid, killed_after = _kill_rank_mid_training(run_dir, rank=1)
    thread.join(timeout=900)
    assert not thread.is_alive(), "the run did not finish after the worker was killed"
    assert killed_after < STEPS, "the kill came after the last step: nothing to resume"

    # A new process took rank 1, and the steps after the last checkpoint before the kill ran again.
    assert int((run_dir / "workers" / "rank1.pid").read_text()) != killed_pid
    steps = [r["step"] for r in result["records"]]
    resumed_from = killed_after // EVERY * EVERY
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart] == resumed_from + 1, steps
    assert steps[restart:] == list(range(resumed_from + 1, STEPS + 1))
    assert (run_dir / "checkpoints").is_dir()

    before_kill = _loss_per_step(result["records"][:restart])
    after_restart = _loss_per_step(result["records"][restart:])
    assert sorted(before_kill | after_restart) == list(range(1, STEPS + 1))
    rerun = list(range(resumed_from + 1, killed_after + 1))
    assert rerun, f"killed at step {killed_after}, right at a checkpoint: no step ran twice to compare"
    assert after_restart[rerun[0]] != before_kill[resumed_from]  # the model trains: losses move
    torch.testing.assert_close(
        torch.tensor([after_restart[s] for s in rerun], dtype=torch.float64),
        torch.tensor([before_kill[s] for s in rerun], dtype=torch.float64),
        rtol=1e-5,
        atol=1e-6,
    )
