"""The controller: a named Ray actor that owns the job store, the device pool and the queue.

It validates every submission (a bad spec is refused with the field's name and nothing is stored),
writes jobs to SQLite, and runs them one at a time on its pool in a scheduling thread: priority
first, then submit time. Its methods are the service's API (the Python client and the CLI call
them; a web page can call them too). On start it re-queues jobs a previous controller left running.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
import torch

from cluster.coordinator import RenderStopped, run_render
from cluster.outputs import job_directory, write_image_job
from cluster.spec import RenderSpec
from cluster.store import JobRecord, JobStore
from cluster.versions import package_versions
from runtime.pool import DevicePool, PoolConfig

CONTROLLER_NAME = "tessera-controller"
NAMESPACE = "tessera"


@dataclass
class ControllerConfig:
    state_dir: str = ".tessera"
    """Folder of the job store (jobs.sqlite) and per-job logs; absolute once the client resolves it."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """The device pool the controller owns."""
    poll_s: float = 0.5
    """How long the scheduling thread sleeps when the queue is empty (a submit wakes it at once)."""
    checkpoint_every: int = 5
    """Steps between checkpoints of a running job's state; a dead worker costs at most this many."""
    max_attempts: int = 3
    """Attempts (first run plus retries after worker failures) before a job is marked failed."""
    preempt: bool = True
    """Pause a running job at a step boundary when a higher-priority job is queued."""


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.state_dir / "jobs.sqlite")
        self.recovered = self.store.recover()
        self.pool = DevicePool(config.pool)
        self.current: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="tessera-scheduler", daemon=True)
        self._thread.start()

    # --- API --------------------------------------------------------------------------------------
    def submit(self, spec: dict, priority: int = 0, client_token: str | None = None) -> dict:
        """Validate and queue a job; a client token already seen returns the existing job."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            from cluster.spec import SpecError

            raise SpecError("priority", f"expected int, got {type(priority).__name__} {priority!r}")
        checked = RenderSpec.from_dict(spec)
        checked.check_fits(self.pool.size)
        record, created = self.store.submit(checked.to_dict(), priority, client_token)
        if created:
            self._log(record.id, f"submitted with priority {priority}")
        self._wake.set()
        return asdict(record)

    def get(self, job_id: str) -> dict:
        return asdict(self.store.get(job_id))

    def list(self, state: str | None = None) -> list[dict]:
        return [asdict(r) for r in self.store.list(state)]

    def cancel(self, job_id: str) -> dict:
        record = self.store.cancel(job_id)
        self._log(job_id, "cancel requested" if record.state == "running" else f"now {record.state}")
        return asdict(record)

    def logs(self, job_id: str) -> str:
        self.store.get(job_id)  # a clear error for an unknown job
        path = self._log_path(job_id)
        return path.read_text() if path.exists() else ""

    def info(self) -> dict:
        return {
            "workers": self.pool.size,
            "device": self.pool.slot.kind,
            "state_dir": str(self.state_dir),
            "running": self.current,
            "pool": self.pool.infos,
            "recovered": self.recovered,
            "versions": package_versions(),
        }

    def stop(self) -> None:
        """Stop scheduling after the running job's current step, and release the pool."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=600)
        self.pool.shutdown()

    # --- scheduling ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(self.config.poll_s)
                self._wake.clear()
                continue
            self.current = job.id
            try:
                self._run(job)
            finally:
                self.current = None

    def _run(self, job: JobRecord) -> None:
        spec = RenderSpec.from_dict(job.spec)
        finished = self._finished_outputs(spec, job.id)
        if finished is not None:  # a previous controller wrote the outputs but died before recording it
            self.store.finish(job.id, "succeeded", outputs=finished)
            self._log(job.id, "outputs already complete; recorded as succeeded")
            return
        resume = self._load_checkpoint(job.id)
        where = f"from step {resume['step_index']}" if resume else "from the start"
        self._log(
            job.id, f"attempt {job.attempts} on {spec.parallel.degree} of {self.pool.size} workers, {where}"
        )
        stop_reason: list[str] = []

        def on_step(done: int) -> bool:
            self.store.progress(job.id, done)
            if self.store.get(job.id).cancel_requested:
                stop_reason.append("cancelled")
            elif self._stop.is_set():
                stop_reason.append("queued")
            elif self.config.preempt and done < spec.steps and self.store.outranked(job.id, job.priority):
                stop_reason.append("paused")
            return not stop_reason

        def on_checkpoint(state: dict) -> None:
            self._save_checkpoint(job.id, state)
            self.store.progress(job.id, state["step_index"], checkpoint_step=state["step_index"])

        started = time.time()
        try:
            result = run_render(
                self.pool,
                spec,
                progress=False,
                on_step=on_step,
                resume=resume,
                checkpoint_every=self.config.checkpoint_every,
                on_checkpoint=on_checkpoint,
            )
        except RenderStopped as stopped:
            state = stop_reason[0]
            if state != "cancelled":
                on_checkpoint(stopped.checkpoint)
            self.store.finish(job.id, state)
            self._log(job.id, f"stopped after {stopped.steps_done} steps: {state}")
            return
        except Exception as err:
            group = list(range(spec.parallel.degree))
            # a killed worker shows up as its own death or as a peer's failed collective, whichever
            # ray.get reports first: ask the pool which workers are gone
            if isinstance(err, ray.exceptions.RayActorError) or self.pool.unhealthy_workers(group):
                self.pool.restart_workers(group)
                retry = job.attempts < self.config.max_attempts
                self.store.finish(job.id, "queued" if retry else "failed", error=f"worker died: {err}")
                self._log(
                    job.id, f"a worker died ({type(err).__name__}); {'requeued' if retry else 'failed'}"
                )
                return
            self.store.finish(job.id, "failed", error=f"{type(err).__name__}: {err}")  # the queue goes on
            self._log(job.id, "failed:\n" + traceback.format_exc())
            return
        metadata = {
            "job_id": job.id,
            "spec": spec.to_dict(),
            "seed": spec.seed,
            "model_path": spec.model_path(),
            "device": self.pool.slot.kind,
            "attempts": job.attempts,
            "versions": package_versions(),
            **result.metadata,
        }
        directory = write_image_job(spec.output_dir, job.id, result.image, metadata)
        self.store.finish(job.id, "succeeded", outputs=self._outputs(directory))
        self._log(job.id, f"succeeded in {time.time() - started:.1f} s: {directory}")

    @staticmethod
    def _outputs(directory: Path) -> dict:
        return {
            "directory": str(directory),
            "image": str(directory / "image.png"),
            "metadata": str(directory / "metadata.json"),
        }

    def _finished_outputs(self, spec: RenderSpec, job_id: str) -> dict | None:
        directory = job_directory(spec.output_dir, job_id)
        return self._outputs(directory) if (directory / "metadata.json").is_file() else None

    def _checkpoint_path(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id / "checkpoint.pt"

    def _save_checkpoint(self, job_id: str, state: dict) -> None:
        path = self._checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact

    def _load_checkpoint(self, job_id: str) -> dict | None:
        path = self._checkpoint_path(job_id)
        return torch.load(path, weights_only=True) if path.exists() else None

    def _log_path(self, job_id: str) -> Path:
        return self.state_dir / "logs" / f"{job_id}.log"

    def _log(self, job_id: str, message: str) -> None:
        with self._log_path(job_id).open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
