"""Run one segment of a job, of any kind, on a group of workers, and record how it ended.

A job runs as segments: a pause, a segment on another model, a worker failure or the controller
stopping ends one; its state goes to the job's checkpoint and the next segment is placed anew,
perhaps on other workers with another degree. The kind (``cluster.jobs``) says how its segment runs
on the runtime side and how its outputs are published; everything else is here, once for all kinds:
the resume point, progress and checkpoints, the stop at a unit boundary, the failure policy, the
segment history and the final metadata.
"""

from __future__ import annotations

import base64
import shutil
import sqlite3
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from cluster.calibrations import CalibrationStore
from cluster.failure_policy import Failure, FailurePolicy, is_storage_error
from cluster.job_files import JobFiles
from cluster.jobs.image import Segment
from cluster.jobs.spec import JobSpec, SegmentResult
from cluster.metrics import ServiceMetrics
from cluster.outputs import job_directory, job_outputs, partial_directory
from cluster.recheck import Rechecks
from cluster.store import JobRecord, JobStore
from cluster.versions import package_versions
from runtime.jobs.driver import JobStopped

KEPT_PREVIEWS = 256
"""Jobs whose latest preview the runner keeps (a few KB each): the running ones and those just ended."""


@dataclass(frozen=True)
class SegmentJob:
    """The job as its kind's ``run_segment`` sees it."""

    id: str
    """The job's id (its outputs' folder name)."""
    resume: dict | None
    """The checkpoint state to continue from; None from the start."""
    first: int
    """The unit the segment starts at."""
    until: int
    """The unit after its last."""


@dataclass(frozen=True)
class SegmentHooks:
    """What the runtime side calls back while the segment runs."""

    on_unit: Callable[[int], bool]
    """After every unit: False stops the segment at that boundary."""
    on_checkpoint: Callable[[dict], None]
    """Receives the state every ``checkpoint_every`` units."""
    checkpoint_every: int
    """Units between checkpoints."""
    release: Callable[..., None]
    """Frees the workers for the next job once nothing more is queued on them for this one; ``release(before)``
    runs ``before`` (recording the job's next state) in the same step as the workers are freed."""


class SegmentRunner:
    def __init__(
        self,
        store: JobStore,
        files: JobFiles,
        pools: Any,
        policy: FailurePolicy,
        checkpoint_every: int,
        stopping: threading.Event,
        is_pausing: Callable[[str], bool],
        forget_workers: Callable[[list[int]], None],
        end: Callable[..., None],
    ) -> None:
        """``end(job_id, state, **fields)`` records how an attempt ended (the controller's, which keeps an end
        it could not write and writes it once the store takes writes again)."""
        self.store = store
        self.files = files
        self.pools = pools
        self.policy = policy
        self.checkpoint_every = checkpoint_every
        self.stopping = stopping
        self.is_pausing = is_pausing
        self.forget_workers = forget_workers
        self.end = end
        self.calibrations = CalibrationStore(store.path)
        """Cache calibrations jobs learned, beside the jobs in the store's database."""
        self.rechecks: Rechecks | None = None
        """Shadow re-checks of cached jobs (``cluster.recheck``), when the controller asks for them."""
        self.metrics: ServiceMetrics | None = None
        """Where each unit's seconds go (``cluster.metrics``); None: nowhere."""
        self.previews: OrderedDict[str, dict] = OrderedDict()
        """The latest preview of the last ``KEPT_PREVIEWS`` jobs that took one (``preview``), by job id: what the
        HTTP API's events send."""

    def preview(self, job_id: str, spec: JobSpec, model: str, units: int, state: dict) -> None:
        """Keep a cheap preview of the state's latent (``pipelines.preview``: the family's linear map of latent
        channels to RGB, no VAE decode), taken at each checkpoint. A preview that fails is logged, never fatal."""
        try:
            latent = spec.preview_latent(state)
            if latent is None:
                return
            from pipelines.preview import latent_rgb, png_bytes

            factors = spec.model_family(model).latent_rgb_factors(spec.model_path(model), latent.shape[0])
            rgb = latent_rgb(latent, factors)
            self.previews[job_id] = {
                "unit": units,
                "width": rgb.shape[1],
                "height": rgb.shape[0],
                "png": base64.b64encode(png_bytes(rgb)).decode(),
            }
            self.previews.move_to_end(job_id)
            while len(self.previews) > KEPT_PREVIEWS:
                self.previews.popitem(last=False)
        except Exception as err:  # noqa: BLE001 - a preview is a nicety; the job goes on without it
            self.files.log(job_id, f"no preview at {spec.unit} {units}: {type(err).__name__}: {err}")

    def run(
        self,
        job: JobRecord,
        spec: JobSpec,
        segment: Segment,
        workers: list[int],
        release: Callable[..., None],
        choice: dict | None = None,
    ) -> None:
        """One segment of ``job`` on ``workers`` (placed: the store says so), to its end or a stop; ``choice``: the
        scheduler's plan for an image job with strategy "auto"."""
        directory = job_directory(spec.output_dir, job.id)
        if (directory / "metadata.json").is_file():  # a previous controller wrote them but died before recording it
            self.end(job.id, "succeeded", outputs=job_outputs(directory, spec.kind, spec.output_file))
            self.files.log(job.id, "outputs already complete; recorded as succeeded")
            return
        resume, first = self._resume_point(job, spec)
        if resume is None:  # what an attempt that never checkpointed left in the partial folder
            shutil.rmtree(partial_directory(spec.output_dir, job.id), ignore_errors=True)
        if first >= segment.until or spec.segment_from(first) != segment:
            # the store and the checkpoint disagree (a crash between their writes, a damaged checkpoint set
            # aside): record where the job really is and place it again, on the segment for that point
            self.store.progress(job.id, first, checkpoint_step=first)
            self.end(job.id, "queued")
            self.files.log(job.id, f"resumes from {spec.unit} {first}; placed again for its segment")
            return
        placed = spec.placed(segment.model, len(workers), choice) if choice else spec.placed(segment.model, len(workers))
        placed = spec.with_calibration(placed, self.calibrations)
        pool = self.pools.pool_of(workers)
        self.files.log(
            job.id,
            f"attempt {job.attempts} on workers {workers} of pool {pool.config.name} "
            + spec.describe_segment(placed, first, segment.until),
        )
        stop_reason: list[str] = []
        last_unit: list[float] = []  # when the previous unit ended; the first unit's time includes set-up

        def on_unit(done: int) -> bool:
            self.store.progress(job.id, done)
            if self.metrics is not None:
                now = time.monotonic()
                if last_unit:
                    self.metrics.unit(spec.kind, spec.unit, now - last_unit[0])
                last_unit[:] = [now]
            if self.store.get(job.id).cancel_requested:
                stop_reason.append("cancelled")
            elif self.stopping.is_set():
                stop_reason.append("queued")
            elif self.is_pausing(job.id) and done < segment.until:
                stop_reason.append("paused")
            return not stop_reason

        checkpointed = [first]  # the unit of this attempt's last checkpoint

        def on_checkpoint(state: dict) -> None:
            self.files.save_checkpoint(job.id, state)
            units = spec.units_of(state)
            self.store.progress(job.id, units, checkpoint_step=units)
            checkpointed[0] = units
            self.preview(job.id, spec, segment.model, units, state)

        def record(last: int, seconds: float, **ended: str) -> None:
            entry = spec.segment_record(placed, first, last)
            self.files.record_segment(
                job.id,
                {**entry, "pool": pool.config.name, "workers": workers, "seconds": round(seconds, 3), **ended},
            )

        hooks = SegmentHooks(on_unit, on_checkpoint, self.checkpoint_every, release)
        self.store.start(job.id)
        started = time.time()
        try:
            result = spec.run_segment(self.pools, placed, workers, SegmentJob(job.id, resume, first, segment.until), hooks)
        except JobStopped as stopped:
            release()
            state = stop_reason[0]
            if state == "cancelled":
                shutil.rmtree(partial_directory(spec.output_dir, job.id), ignore_errors=True)
            else:
                on_checkpoint(stopped.checkpoint)
            record(stopped.steps_done, time.time() - started)
            self.end(job.id, state)
            self.files.log(job.id, f"stopped after {stopped.steps_done} {spec.unit}s: {state}")
            return
        except Exception as err:
            if checkpointed[0] > first and not is_storage_error(err):
                # the next attempt resumes from this one's last checkpoint: its units up to there are in the
                # video or image, so the job's segment history says where they ran
                try:
                    record(checkpointed[0], time.time() - started, ended="failed", error=type(err).__name__)
                except OSError:  # the history is a record; the failure itself is handled below regardless
                    pass
            self._failed(job, spec, workers, err)
            return
        boundary = result.checkpoint is not None  # the next segment is placed anew
        if not boundary:
            release()
        record(segment.until, time.time() - started)
        if self.metrics is not None:
            try:
                self.metrics.segment(pool.config.name, workers, result.metadata)
            except Exception as err:  # noqa: BLE001 - a metric is a measurement; the job goes on without it
                self.files.log(job.id, f"metrics not recorded: {type(err).__name__}: {err}")
        learned = spec.learned_calibration(placed, result.metadata)
        if learned is not None:
            try:
                self.calibrations.put(*learned, job.id)
                self.files.log(job.id, f"cache calibrated: {learned[1]}")
            except sqlite3.Error as err:  # the job is fine; the next one calibrates again
                self.files.log(job.id, f"cache calibration not kept ({err}): {learned[1]}")
        if boundary:
            on_checkpoint(result.checkpoint)
            # queued in the same step as its workers are freed: no lower-priority job takes them in between
            release(lambda: self.end(job.id, "queued"))
            self.files.log(job.id, f"segment done at {spec.unit} {segment.until}; queued for the next segment")
            return
        self._publish(job, spec, result, pool.slot.kind, started, placed)

    def _resume_point(self, job: JobRecord, spec: JobSpec) -> tuple[dict | None, int]:
        """The newest good checkpoint of the job and its unit; a damaged one is set aside and said so."""
        loaded = self.files.load_checkpoint(job.id)
        for problem in loaded.problems:
            self.files.log(job.id, f"checkpoint {problem}; set aside")
        if loaded.state is None:
            return None, 0
        try:
            return loaded.state, spec.units_of(loaded.state)
        except (KeyError, TypeError, ValueError) as err:  # a sound file holding another kind's state
            self.files.log(job.id, f"checkpoint is not this {spec.kind} job's state ({err!r}); starting over")
            return None, 0

    def _publish(
        self, job: JobRecord, spec: JobSpec, result: SegmentResult, device: str, started: float, placed: JobSpec
    ) -> None:
        metadata = {
            "job_id": job.id,
            "spec": spec.stored(),
            "seed": spec.seed,
            "model_path": spec.model_path(),
            "device": device,
            "attempts": job.attempts,
            "versions": package_versions(),
            **result.metadata,
            "segments": self.files.segments(job.id),
        }
        directory = spec.publish(job.id, result, metadata)
        if self.rechecks is not None:  # before the end is recorded: a waiting client then sees the re-check queued
            try:
                self.rechecks.after_publish(job, spec, placed, result.latents, directory)
            except Exception:  # noqa: BLE001 - a re-check is a measurement; the job itself is done
                self.files.log(job.id, "shadow re-check not done:\n" + traceback.format_exc())
        self.end(job.id, "succeeded", outputs=job_outputs(directory, spec.kind, spec.output_file))
        self.files.log(job.id, f"succeeded in {time.time() - started:.1f} s: {directory}")

    def _failed(self, job: JobRecord, spec: JobSpec, workers: list[int], err: Exception) -> None:
        """Replace the group's workers if one of them died, then let the policy requeue or fail the job."""
        # a killed worker shows up as its own death or as a peer's failed collective, whichever
        # ray.get reports first: ask the pool which workers are gone
        storage = is_storage_error(err)
        died = not storage and (
            isinstance(err, ray.exceptions.RayActorError) or bool(self.pools.unhealthy_workers(workers))
        )
        if died:
            self.pools.restart_workers(workers)
            self.forget_workers(workers)
        state = self.policy.decide(Failure(job, err, died, storage))
        if storage:
            self.end(job.id, state, error=f"the job store could not be written: {err}")
            self.files.log(job.id, f"its state could not be written ({err}); {state}")
            return
        if died:
            self.end(job.id, state, error=f"worker died: {err}", failed_attempt=True)
            self.files.log(job.id, f"a worker died ({type(err).__name__}); {'requeued' if state == 'queued' else 'failed'}")
            return
        if state == "failed":
            shutil.rmtree(partial_directory(spec.output_dir, job.id), ignore_errors=True)
        self.end(job.id, state, error=error_text(err))  # the queue goes on
        self.files.log(job.id, f"{state}:\n" + traceback.format_exc())


def error_text(err: BaseException) -> str:
    """A failed job's ``error``: what the worker's code raised, as "Type: message". Ray's wrapper of a task's
    exception reads as the worker's whole traceback in terminal colours, with its pid and actor id; that stays in
    the job's log."""
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    shown = cause if isinstance(cause, BaseException) else err
    return f"{type(shown).__name__}: {shown}"
