"""Recovery from a dead worker: Ray Train restarts the worker group, and the run goes on from our checkpoint.

When a worker process dies, Ray Train (RunConfig's FailureConfig, `max_failures`) stops the group and runs
`train_worker` again on a new one. Each `tessera train` invocation has a `run_id`, and every checkpoint
records the run that wrote it, so a restarted worker tells "this run already got this far" (resume from it,
even without `resume=true`) from "an earlier run's checkpoint is lying in run_dir" (start over unless
`resume=true`). Our checkpoints are complete when listed (written aside, then renamed), so every new worker
finds the same one. Ray's own checkpoint registration is not used: a report can be lost when a worker
dies right after it, and the run directory is the state we trust.

Each worker also writes its process id to run_dir/workers/rank<r>.pid: which process is which rank.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from runtime.training.checkpoint import CheckpointState, last_checkpoint, read_state
from runtime.training.config import TrainConfig


def new_run_id() -> str:
    return uuid.uuid4().hex


def restart_point(run_dir: Path, run_id: str) -> tuple[Path, CheckpointState] | None:
    """The last checkpoint in run_dir if this run (run_id) wrote it: a restart after a failure resumes there."""
    found = last_checkpoint(Path(run_dir))
    if found is None or not run_id:
        return None
    state = read_state(found)
    return (found, state) if state.run_id == run_id else None


def resume_point(cfg: TrainConfig) -> tuple[Path | None, CheckpointState | None]:
    """The checkpoint to start from: this run's last one when Ray Train restarted the workers after one died,
    else with `resume` the last one in run_dir, else none."""
    restarted = restart_point(Path(cfg.run_dir), cfg.run_id)
    if restarted is not None:
        return restarted
    found = last_checkpoint(Path(cfg.run_dir)) if cfg.resume else None
    if found is None:
        return None, None
    state = read_state(found)
    if (state.workers, state.stages) != (cfg.workers, cfg.stages):
        raise ValueError(
            f"resume: {found} was written by {state.workers} workers / {state.stages} stages, "
            f"this run has {cfg.workers} / {cfg.stages}"
        )
    return found, state


def write_pid(run_dir: Path, rank: int) -> Path:
    """run_dir/workers/rank<rank>.pid with this process's id (replaced when a restarted worker starts)."""
    path = Path(run_dir) / "workers" / f"rank{rank}.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(str(os.getpid()))
    partial.replace(path)
    return path
