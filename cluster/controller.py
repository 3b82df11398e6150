"""The controller: a named Ray actor that owns the job store, the device pool and the queue.

It validates every submission (a bad spec is refused with the field's name and nothing is stored)
and writes jobs to SQLite. A scheduling thread places the head of the queue (priority, then submit
time) on free workers (cluster.scheduler), so jobs on disjoint worker groups run at once, each
driven by its own thread; a higher-priority job that does not fit pauses lower ones at a step
boundary. A job runs as segments: a pause, a segment on another model, or a worker failure ends
one, its state goes to the job directory, and the next segment is placed anew, perhaps on other
workers with another degree. Video jobs (cluster.video_job) are queued, placed, checkpointed and
paused the same way, at the tick boundaries of their frame-block queue. Its methods are the
service's API (the Python client and the CLI call them; a web page can call them too). On start it
re-queues jobs a previous controller left running.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
import torch

from cluster.coordinator import RenderStopped, run_render
from cluster.job_kinds import parse_job, stored_spec
from cluster.names import CONTROLLER_NAME as CONTROLLER_NAME  # re-exported
from cluster.names import NAMESPACE as NAMESPACE
from cluster.outputs import job_directory, write_image_job
from cluster.scheduler import (
    CostModelDegreeRule,
    DegreeRule,
    RunningJob,
    WorkerBook,
    choose_pool,
    pools_to_pause,
    simple_degree_rule,
    workers_needed,
)
from cluster.spec import RenderSpec, SpecError
from cluster.store import JobRecord, JobStore
from cluster.versions import package_versions
from cluster.video_job import VideoJobs, partial_directory
from cluster.video_spec import VideoSpec
from runtime.pool import PoolConfig
from runtime.pool_set import PoolSet


@dataclass
class ControllerConfig:
    state_dir: str = ".tessera"
    """Folder of the job store (jobs.sqlite) and per-job logs; absolute once the client resolves it."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """The device pool the controller owns (when `pools` is empty)."""
    pools: list[PoolConfig] = field(default_factory=list)
    """Several named pools (e.g. one per GPU kind, or GPUs beside CPUs), in order of preference; a job's
    `device` field picks among them. Empty: the one `pool`."""
    poll_s: float = 0.5
    """How long the scheduling thread sleeps when the queue is empty (a submit wakes it at once)."""
    checkpoint_every: int = 5
    """Steps (a video: queue ticks) between checkpoints of a running job's state; a dead worker costs
    at most this many."""
    max_attempts: int = 3
    """Attempts ending in a worker failure before a job is marked failed."""
    preempt: bool = True
    """Pause a running job at a step boundary when a higher-priority job is queued."""
    degree_rule: str = "cost"
    """degree=auto by "cost" (the cost model, parallel.cost) or "simple" (band height only)."""
    cost_device: str = "auto"
    """Device name in parallel/cost/specs.yaml; "auto": cpu-core on CPU pools (GPU pools need a name)."""
    cost_link: str = "auto"
    """Link name in parallel/cost/specs.yaml; "auto": loopback on CPU pools."""


class Controller(VideoJobs):
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.state_dir / "jobs.sqlite")
        self.recovered = self.store.recover()
        self.pools = PoolSet(config.pools or [config.pool])
        self.degree_rules = {name: self._degree_rule(self.pools.kind(name)) for name in self.pools.names}
        self.book = WorkerBook(self.pools.size)
        self.running: dict[str, RunningJob] = {}
        self._pausing: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._resume_steps: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="tessera-scheduler", daemon=True)
        self._thread.start()

    # --- API --------------------------------------------------------------------------------------
    def submit(self, spec: dict, priority: int = 0, client_token: str | None = None) -> dict:
        """Validate and queue a job; a client token already seen returns the existing job."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise SpecError("priority", f"expected int, got {type(priority).__name__} {priority!r}")
        checked = parse_job(spec)
        self._check_fits(checked)
        record, created = self.store.submit(stored_spec(checked), priority, client_token)
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
        if record.state == "cancelled" and record.spec.get("job") == "video":  # its kept blocks
            shutil.rmtree(partial_directory(record.spec["output_dir"], job_id), ignore_errors=True)
        self._log(job_id, "cancel requested" if record.state == "running" else f"now {record.state}")
        return asdict(record)

    def logs(self, job_id: str) -> str:
        self.store.get(job_id)  # a clear error for an unknown job
        path = self._log_path(job_id)
        return path.read_text() if path.exists() else ""

    def info(self) -> dict:
        with self._lock:
            running = {job_id: list(job.workers) for job_id, job in self.running.items()}
            free = sorted(self.book.free)
        return {
            "workers": self.pools.size,
            "device": "+".join(sorted({self.pools.kind(name) for name in self.pools.names})),
            "pools": self.pools.describe(),
            "state_dir": str(self.state_dir),
            "running": running,
            "free_workers": free,
            "pool": self.pools.infos,
            "recovered": self.recovered,
            "versions": package_versions(),
        }

    def worker_busy_seconds(self) -> list[float]:
        """Per pool worker, the seconds it has spent rendering (for utilisation figures)."""
        return ray.get([w.busy_seconds.remote() for w in self.pools.workers])

    def stop(self) -> None:
        """Stop scheduling after the running jobs' current steps (they go back to the queue), and
        release the pool."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=600)
        for thread in list(self._threads.values()):
            thread.join(timeout=600)
        self.pools.shutdown()

    def _check_fits(self, spec: RenderSpec | VideoSpec) -> None:
        """Refuse a job no pool can run: a `device` no pool matches, or a degree above every allowed
        pool's size (SpecError naming the field)."""
        for name, device in spec.device_requests().items():
            allowed = self.pools.matching(device)
            if not allowed:
                pools = ", ".join(f"{p['name']} ({p['device']}, {len(p['workers'])})" for p in self.pools.describe())
                raise SpecError(name, f"no pool is named {device!r} or has that device kind; pools: {pools}")
            spec.check_fits(max(len(self.pools.indices(pool)) for pool in allowed))

    def _allowed_pools(self, device: str) -> dict[str, set[int]]:
        return {name: set(self.pools.indices(name)) for name in self.pools.matching(device)}

    # --- scheduling ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.is_set():
            if not self._place_head():
                self._wake.wait(self.config.poll_s)
                self._wake.clear()

    def _place_head(self) -> bool:
        """Start the head of the queue if its workers are free; else pause lower jobs for it.
        True when a job started (the next one may fit too)."""
        head = self.store.next_runnable()
        if head is None:
            return False
        try:
            spec = parse_job(head.spec)
        except SpecError as err:  # valid at submit, but e.g. its model directory is gone since
            if self.store.claim(head.id) is not None:
                self.store.finish(head.id, "failed", error=str(err))
                self._log(head.id, f"failed: {err}")
            return True
        video = isinstance(spec, VideoSpec)
        if video:  # one segment to the end, on parallel.degree stages
            model_path = spec.model_path()
            model_key = f"{model_path}|{spec.dtype}"
            device = spec.device
        else:
            step = self._resume_step(head.id)
            model, until = spec.segment_at(step)
            model_path = spec.placed(model, 1).model_path()  # the model path and dtype only
            model_key = f"{model_path}|{spec.dtype}"
            device = spec.segment_device(step)
        allowed = self._allowed_pools(device)
        if not allowed:  # a restarted controller with other pools than the one that took the job
            if self.store.claim(head.id) is not None:
                self.store.finish(head.id, "failed", error=f"device: no pool matches {device!r} any more")
                self._log(head.id, f"failed: no pool matches device {device!r}")
            return True
        with self._lock:
            placement = choose_pool(spec, model_path, model_key, allowed, self.book, self.degree_rules)
            if placement is None:
                victims = []
                if self.config.preempt:
                    victims = pools_to_pause(
                        head.priority,
                        workers_needed(spec),
                        allowed,
                        set(self.book.free),
                        list(self.running.values()),
                        self._pausing,
                    )
                    self._pausing.update(victims)
                for victim in victims:
                    self._log(victim, f"pausing for {head.id} (priority {head.priority})")
                return False
            job = self.store.claim(head.id)
            if job is None:  # cancelled between the look and the claim
                return True
            pool_name, degree = placement
            workers = self.book.take(degree, model_key, among=allowed[pool_name])
            self.running[job.id] = RunningJob(job.id, job.priority, job.submitted_at, workers)
            if video:
                run = functools.partial(self._run_video, job, spec, workers)
            else:
                run = functools.partial(self._run, job, spec.placed(model, degree), workers, until)
            thread = threading.Thread(
                target=self._run_segment,
                args=(job, workers, run),
                name=f"tessera-job-{job.id}",
                daemon=True,
            )
            self._threads[job.id] = thread
        thread.start()
        return True

    def _run_segment(
        self, job: JobRecord, workers: list[int], run: Callable[[Callable[[], None]], None]
    ) -> None:
        """Run one segment of `job` on `workers` (`run(release)`), and free them whatever happens."""
        released: list[bool] = []

        def release() -> None:
            """Free the workers for the next job as soon as they are done (before outputs are written)."""
            with self._lock:
                if released:
                    return
                released.append(True)
                self.running.pop(job.id, None)
                self._pausing.discard(job.id)
                self.book.give_back(workers)
            self._wake.set()

        try:
            run(release)
        except Exception:  # noqa: BLE001 - a bookkeeping error must not leave the job running forever
            self._log(job.id, "controller error:\n" + traceback.format_exc())
            try:
                self.store.finish(job.id, "failed", error="controller error; see the job's log")
            except Exception:  # noqa: BLE001 - already final
                pass
        finally:
            release()
            with self._lock:
                self._threads.pop(job.id, None)
            self._wake.set()  # the job may be runnable again (paused, next segment, retry)

    def _degree_rule(self, kind: str) -> DegreeRule:
        """degree=auto's rule for one pool: the cost model for its device kind where it knows one."""
        config = self.config
        if config.degree_rule not in ("cost", "simple"):
            raise ValueError(f"degree_rule: expected 'cost' or 'simple', got {config.degree_rule!r}")
        cpu = kind == "cpu"
        device = config.cost_device if config.cost_device != "auto" else ("cpu-core" if cpu else None)
        link = config.cost_link if config.cost_link != "auto" else ("loopback" if cpu else None)
        if config.degree_rule == "simple" or device is None or link is None:
            return simple_degree_rule
        return CostModelDegreeRule(device, link)

    def _resume_step(self, job_id: str) -> int:
        """The step a job continues from: its checkpoint's, read once per checkpoint file version (a
        head job waiting for workers is looked at every poll; its checkpoint need not be reloaded)."""
        path = self._checkpoint_path(job_id)
        try:
            version = path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        cached = self._resume_steps.get(job_id)
        if cached is None or cached[0] != version:
            cached = (version, int(torch.load(path, weights_only=True)["step_index"]))
            self._resume_steps[job_id] = cached
        return cached[1]

    def _run(
        self, job: JobRecord, spec: RenderSpec, workers: list[int], until: int, release: Callable[[], None]
    ) -> None:
        """One segment of a job: `spec` is placed (its model and degree fixed) on `workers`; `release`
        hands the workers back once they have nothing more to do for it."""
        job_spec = RenderSpec.from_dict(job.spec)
        finished = self._finished_outputs(job_spec, job.id)
        if finished is not None:  # a previous controller wrote the outputs but died before recording it
            self.store.finish(job.id, "succeeded", outputs=finished)
            self._log(job.id, "outputs already complete; recorded as succeeded")
            return
        resume = self._load_checkpoint(job.id)
        first = resume["step_index"] if resume else 0
        where = f"from step {first}" if resume else "from the start"
        self._log(
            job.id,
            f"attempt {job.attempts} on workers {workers} of pool {self._pool_name(workers)} (degree {len(workers)}, "
            f"{spec.parallel.strategy}, {Path(spec.model_path()).name}), {where} to step {until}",
        )
        stop_reason: list[str] = []

        def on_step(done: int) -> bool:
            self.store.progress(job.id, done)
            if self.store.get(job.id).cancel_requested:
                stop_reason.append("cancelled")
            elif self._stop.is_set():
                stop_reason.append("queued")
            elif job.id in self._pausing and done < until:
                stop_reason.append("paused")
            return not stop_reason

        def on_checkpoint(state: dict) -> None:
            self._save_checkpoint(job.id, state)
            self.store.progress(job.id, state["step_index"], checkpoint_step=state["step_index"])

        started = time.time()
        try:
            result = run_render(
                self.pools,
                spec,
                progress=False,
                on_step=on_step,
                resume=resume,
                checkpoint_every=self.config.checkpoint_every,
                on_checkpoint=on_checkpoint,
                indices=workers,
                until=until,
                on_last_call=release,  # a one-worker job's next job queues behind its decode
            )
        except RenderStopped as stopped:
            release()
            state = stop_reason[0]
            if state != "cancelled":
                on_checkpoint(stopped.checkpoint)
            self._record_segment(job.id, spec, workers, first, stopped.steps_done, time.time() - started)
            self.store.finish(job.id, state)
            self._log(job.id, f"stopped after {stopped.steps_done} steps: {state}")
            return
        except Exception as err:
            if self._worker_failed(job, workers, err):
                return
            self.store.finish(job.id, "failed", error=f"{type(err).__name__}: {err}")  # the queue goes on
            self._log(job.id, "failed:\n" + traceback.format_exc())
            return
        release()
        self._record_segment(job.id, spec, workers, first, until, time.time() - started)
        if result.checkpoint is not None:  # a segment boundary: the next segment is placed anew
            on_checkpoint(result.checkpoint)
            self.store.finish(job.id, "queued")
            self._log(job.id, f"segment done at step {until}; queued for the next segment")
            return
        metadata = {
            "job_id": job.id,
            "spec": job_spec.to_dict(),
            "seed": job_spec.seed,
            "model_path": job_spec.model_path(),
            "device": self.pools.pool_of(workers).slot.kind,
            "attempts": job.attempts,
            "versions": package_versions(),
            **result.metadata,
            "segments": self._segments(job.id),
        }
        directory = write_image_job(job_spec.output_dir, job.id, result.image, metadata)
        self.store.finish(job.id, "succeeded", outputs=self._outputs(directory))
        self._log(job.id, f"succeeded in {time.time() - started:.1f} s: {directory}")

    def _worker_failed(self, job: JobRecord, workers: list[int], err: Exception) -> bool:
        """If `err` came from a dead worker: replace the group's workers and requeue the job (it
        resumes from its checkpoint) or fail it after max_attempts; True. False: another error."""
        # a killed worker shows up as its own death or as a peer's failed collective, whichever
        # ray.get reports first: ask the pool which workers are gone
        if not isinstance(err, ray.exceptions.RayActorError) and not self.pools.unhealthy_workers(workers):
            return False
        self.pools.restart_workers(workers)
        with self._lock:
            self.book.forget(workers)
        retry = job.failures + 1 < self.config.max_attempts
        self.store.finish(
            job.id, "queued" if retry else "failed", error=f"worker died: {err}", failed_attempt=True
        )
        self._log(job.id, f"a worker died ({type(err).__name__}); {'requeued' if retry else 'failed'}")
        return True

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

    def _job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    def _checkpoint_path(self, job_id: str) -> Path:
        return self._job_dir(job_id) / "checkpoint.pt"

    def _save_checkpoint(self, job_id: str, state: dict) -> None:
        path = self._checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact

    def _load_checkpoint(self, job_id: str) -> dict | None:
        path = self._checkpoint_path(job_id)
        return torch.load(path, weights_only=True) if path.exists() else None

    def _record_segment(
        self, job_id: str, spec: RenderSpec, workers: list[int], first: int, last: int, seconds: float
    ) -> None:
        """Append what ran where to the job's segment history (metadata.json's "segments")."""
        path = self._job_dir(job_id) / "segments.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "steps": [first, last],
            "model_path": spec.model_path(),
            "strategy": spec.parallel.strategy,
            "degree": spec.parallel.degree,
            "pool": self._pool_name(workers),
            "workers": workers,
            "seconds": round(seconds, 3),
        }
        with path.open("a") as history:
            history.write(json.dumps(entry) + "\n")

    def _segments(self, job_id: str) -> list[dict]:
        path = self._job_dir(job_id) / "segments.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _pool_name(self, workers: list[int]) -> str:
        return self.pools.pool_of(workers).config.name

    def _log_path(self, job_id: str) -> Path:
        return self.state_dir / "logs" / f"{job_id}.log"

    def _log(self, job_id: str, message: str) -> None:
        with self._log_path(job_id).open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
