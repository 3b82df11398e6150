"""Video jobs in the service: one segment of a video job on a group of the controller's workers.

A video job is queue ticks over a checkpointable state (``runtime.video_state``): the blocks in the
queue with their latents and sampler state, and the feature cache. Every ``checkpoint_every`` ticks
the state goes to the job directory (``checkpoint.pt``, written atomically by the controller), and a
pause stops at a tick boundary with the state there. Finished blocks are kept in the job's hidden
partial output folder, each as its own small H.264 segment (``pipelines.video_blocks``), so they
survive a pause, a killed worker or a restarted controller; when the last block is in, stage 0 joins
the segments into ``video.mp4`` (stream copy, no re-encode), metadata.json is added and the folder is
renamed to ``outputs/<job-id>/``. Neither the driver nor any worker ever holds more than the blocks in
flight and one finished block.

``VideoJobs`` is a mixin of the controller (``cluster.controller``): it uses the controller's store,
pool, log, checkpoint files and worker-failure handling.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from cluster.job_kinds import stored_spec
from cluster.outputs import job_directory
from cluster.store import JobRecord
from cluster.versions import package_versions
from cluster.video_spec import VideoSpec
from parallel.frames.schedule import ticks as schedule_ticks
from runtime.video_render import VideoRenderStopped, run_video_render
from runtime.video_task import VideoTask


def video_task(spec: VideoSpec, video_path: str | Path) -> VideoTask:
    return VideoTask(
        model_path=spec.model_path(),
        dtype=spec.dtype,
        prompt=spec.prompt,
        height=spec.height,
        width=spec.width,
        frames=spec.frames,
        block_frames=spec.block_frames,
        context_frames=spec.context_frames,
        steps=spec.steps,
        block_stride=spec.block_stride,
        seed=spec.seed,
        fps=float(spec.fps),
        video_path=str(Path(video_path).resolve()),
        guidance_scale=float(spec.guidance_scale),
        negative_prompt=spec.negative_prompt,
    )


def partial_directory(output_dir: str, job_id: str) -> Path:
    """The hidden folder a video job's outputs grow in: outputs/.<job-id>.partial/."""
    target = job_directory(output_dir, job_id)
    return target.parent / f".{job_id}.partial"


def video_outputs(directory: Path) -> dict:
    return {
        "directory": str(directory),
        "video": str(directory / "video.mp4"),
        "metadata": str(directory / "metadata.json"),
    }


class VideoJobs:
    """The controller's video-job half (mixed into ``Controller``)."""

    def _run_video(
        self, job: JobRecord, spec: VideoSpec, workers: list[int], release: Callable[[], None]
    ) -> None:
        """One segment of a video job on `workers`, from its checkpoint (if any) to the end or a stop."""
        target = job_directory(spec.output_dir, job.id)
        if (target / "metadata.json").is_file():  # a previous controller finished it but did not record it
            self.store.finish(job.id, "succeeded", outputs=video_outputs(target))
            self._log(job.id, "outputs already complete; recorded as succeeded")
            return
        partial = partial_directory(spec.output_dir, job.id)
        resume = self._load_checkpoint(job.id)
        if resume is None:
            shutil.rmtree(partial, ignore_errors=True)  # blocks of an attempt that never checkpointed
        first = resume["tick"] if resume else 0
        total = schedule_ticks(spec.blocks, spec.steps, spec.block_stride)
        where = f"from tick {first} ({resume['blocks_finished']} blocks kept)" if resume else "from the start"
        self._log(
            job.id,
            f"attempt {job.attempts} on workers {workers} of pool {self._pool_name(workers)} (video, {len(workers)} "
            f"stages, {Path(spec.model_path()).name}), {where} to tick {total}",
        )
        stop_reason: list[str] = []

        def on_tick(done: int) -> bool:
            self.store.progress(job.id, done)
            if self.store.get(job.id).cancel_requested:
                stop_reason.append("cancelled")
            elif self._stop.is_set():
                stop_reason.append("queued")
            elif job.id in self._pausing and done < total:
                stop_reason.append("paused")
            return not stop_reason

        def on_checkpoint(state: dict) -> None:
            self._save_checkpoint(job.id, state)
            self.store.progress(job.id, state["tick"], checkpoint_step=state["tick"])

        started = time.time()
        try:
            metadata = run_video_render(
                self.pools,
                video_task(spec, partial / "video.mp4"),
                len(workers),
                progress=False,
                ticks_per_call=1,
                indices=workers,
                block_dir=str(partial / "blocks"),
                resume=resume,
                on_tick=on_tick,
                checkpoint_every=self.config.checkpoint_every,
                on_checkpoint=on_checkpoint,
            )
        except VideoRenderStopped as stopped:
            release()
            state = stop_reason[0]
            if state == "cancelled":
                shutil.rmtree(partial, ignore_errors=True)
            else:
                on_checkpoint(stopped.checkpoint)
            self._record_video_segment(job.id, workers, first, stopped.ticks_done, time.time() - started)
            self.store.finish(job.id, state)
            self._log(job.id, f"stopped after {stopped.ticks_done} ticks: {state}")
            return
        except Exception as err:
            if self._worker_failed(job, workers, err):
                return
            shutil.rmtree(partial, ignore_errors=True)
            self.store.finish(job.id, "failed", error=f"{type(err).__name__}: {err}")  # the queue goes on
            self._log(job.id, "failed:\n" + traceback.format_exc())
            return
        release()
        self._record_video_segment(job.id, workers, first, total, time.time() - started)
        metadata = dict(
            metadata,
            job_id=job.id,
            spec=stored_spec(spec),
            seed=spec.seed,
            device=self.pools.pool_of(workers).slot.kind,
            attempts=job.attempts,
            versions=package_versions(),
            outputs={"video": str(target / "video.mp4")},
            segments=self._segments(job.id),
        )
        shutil.rmtree(partial / "blocks")
        (partial / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        os.replace(partial, target)
        self.store.finish(job.id, "succeeded", outputs=video_outputs(target))
        self._log(job.id, f"succeeded in {time.time() - started:.1f} s: {target}")

    def _record_video_segment(
        self, job_id: str, workers: list[int], first: int, last: int, seconds: float
    ) -> None:
        """Append what ran where to the job's segment history (metadata.json's "segments")."""
        path = self._job_dir(job_id) / "segments.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "ticks": [first, last],
            "stages": len(workers),
            "pool": self._pool_name(workers),
            "workers": workers,
            "seconds": round(seconds, 3),
        }
        with path.open("a") as history:
            history.write(json.dumps(entry) + "\n")
