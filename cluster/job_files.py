"""A job's files in the controller's state folder: its log, its checkpoint and its segment history.

    <state_dir>/logs/<job-id>.log              what happened to the job, one line per event
    <state_dir>/jobs/<job-id>/checkpoint.pt     the state at the last checkpoint (written atomically)
    <state_dir>/jobs/<job-id>/segments.jsonl    what ran where: one line per segment (metadata's "segments")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


class JobFiles:
    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def store_path(self) -> Path:
        return self.state_dir / "jobs.sqlite"

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    # --- log ---------------------------------------------------------------------------------------
    def log_path(self, job_id: str) -> Path:
        return self.state_dir / "logs" / f"{job_id}.log"

    def log(self, job_id: str, message: str) -> None:
        with self.log_path(job_id).open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def read_log(self, job_id: str) -> str:
        path = self.log_path(job_id)
        return path.read_text() if path.exists() else ""

    # --- checkpoint --------------------------------------------------------------------------------
    def checkpoint_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoint.pt"

    def save_checkpoint(self, job_id: str, state: dict) -> None:
        path = self.checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact

    def load_checkpoint(self, job_id: str) -> dict | None:
        path = self.checkpoint_path(job_id)
        return torch.load(path, weights_only=True) if path.exists() else None

    # --- segment history ---------------------------------------------------------------------------
    def record_segment(self, job_id: str, entry: dict) -> None:
        """Append what ran where to the job's segment history."""
        path = self.job_dir(job_id) / "segments.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as history:
            history.write(json.dumps(entry) + "\n")

    def segments(self, job_id: str) -> list[dict]:
        path = self.job_dir(job_id) / "segments.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
