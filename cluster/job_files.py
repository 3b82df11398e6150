"""A job's files in the controller's state folder: its log, its checkpoint and its segment history.

    <state_dir>/logs/<job-id>.log              what happened to the job, one line per event
    <state_dir>/jobs/<job-id>/checkpoint.pt     the state at the last checkpoint (written atomically), with the
                                                job's id and a checksum, verified on read
    <state_dir>/jobs/<job-id>/checkpoint.prev.pt the checkpoint before it, for when the last one is damaged
    <state_dir>/jobs/<job-id>/segments.jsonl    what ran where: one line per segment (metadata's "segments")
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

CHECKPOINT_FORMAT = 2
"""Checkpoints since the job id and checksum; format 1 was the bare state, still read."""


@dataclass
class LoadedCheckpoint:
    """What reading a job's checkpoints found."""

    state: dict | None
    """The newest good state; None when there is none (start from the beginning)."""
    problems: list[str] = field(default_factory=list)
    """Why newer checkpoints were refused (each damaged file is kept beside, renamed ``*.bad``)."""


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
        """Append to the job's log; a log that cannot be written (a full disk) never stops the job."""
        try:
            with self.log_path(job_id).open("a") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as err:
            print(f"tessera: cannot write the log of job {job_id} ({err}): {message}", file=sys.stderr)

    def log_controller(self, message: str) -> None:
        """The controller's own log (<state_dir>/logs/controller.log): what happened outside any one job."""
        print(f"tessera controller: {message}", file=sys.stderr, flush=True)
        try:
            with (self.state_dir / "logs" / "controller.log").open("a") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError:
            pass  # said on stderr above

    def read_log(self, job_id: str) -> str:
        path = self.log_path(job_id)
        return path.read_text() if path.exists() else ""

    # --- checkpoint --------------------------------------------------------------------------------
    def checkpoint_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoint.pt"

    def previous_checkpoint_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoint.prev.pt"

    def save_checkpoint(self, job_id: str, state: dict) -> None:
        """Write the state with the job's id and its checksum; the checkpoint it replaces becomes the previous one."""
        path = self.checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        record = {
            "format": CHECKPOINT_FORMAT,
            "job_id": job_id,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "state": payload,
        }
        buffer = io.BytesIO()
        torch.save(record, buffer)  # in memory: a full disk then fails as an OSError (ENOSPC), not torch's own
        partial = path.with_suffix(".partial")
        try:
            with partial.open("wb") as file:
                file.write(buffer.getvalue())
                file.flush()
                os.fsync(file.fileno())
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        if path.exists():
            os.replace(path, self.previous_checkpoint_path(job_id))
        os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact

    def load_checkpoint(self, job_id: str) -> LoadedCheckpoint:
        """The newest checkpoint that reads back whole and is this job's; damaged ones are set aside, with why."""
        problems = []
        for path in (self.checkpoint_path(job_id), self.previous_checkpoint_path(job_id)):
            if not path.exists():
                continue
            try:
                return LoadedCheckpoint(_verified_state(path, job_id), problems)
            except CheckpointError as err:
                problems.append(f"{path.name}: {err}")
                os.replace(path, path.with_name(path.name + ".bad"))
        return LoadedCheckpoint(None, problems)

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


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable, of another job, or not what it claims."""


def _verified_state(path: Path, job_id: str) -> dict:
    try:
        record = torch.load(path, weights_only=True)  # refuses anything but tensors and plain data
    except Exception as err:  # noqa: BLE001 - truncated, empty, refused pickle: all mean "cannot be read"
        raise CheckpointError(f"unreadable ({type(err).__name__}: {str(err)[:200]})") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"holds a {type(record).__name__}, not a checkpoint")
    if "sha256" not in record:
        if "step_index" in record or "tick" in record:
            return record  # written before checkpoints carried a checksum
        raise CheckpointError("is not a checkpoint (no state, no checksum)")
    if record.get("job_id") != job_id:
        raise CheckpointError(f"belongs to job {record.get('job_id')!r}, not {job_id!r}")
    payload = record.get("state")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise CheckpointError("does not match its checksum")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"state unreadable ({type(err).__name__})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"state is a {type(state).__name__}")
    return state
