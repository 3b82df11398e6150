"""Run one video render job and write outputs/<job-id>/video.mp4 and metadata.json atomically.

Everything goes to a hidden partial folder (stage 0 streams the MP4 into it), renamed into place when
the job succeeded; a failed job leaves nothing behind. The video job runs on its own pool here; it
does not go through the controller's queue yet.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

from cluster.outputs import job_directory
from cluster.versions import package_versions
from cluster.video_spec import VideoSpec
from runtime.pool import DevicePool, PoolConfig
from runtime.ray_session import ray_session
from runtime.video_render import run_video_render
from runtime.video_task import VideoTask


def new_job_id() -> str:
    return f"video-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


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
        seed=spec.seed,
        fps=float(spec.fps),
        video_path=str(Path(video_path).resolve()),
        guidance_scale=float(spec.guidance_scale),
        negative_prompt=spec.negative_prompt,
    )


def run_video_job(
    spec: VideoSpec, pool_config: PoolConfig, address: str | None = None, progress: bool = True
) -> Path:
    """Render ``spec`` on a fresh pool; returns outputs/<job-id>/."""
    spec.check_fits(pool_config.workers)
    job_id = new_job_id()
    target = job_directory(spec.output_dir, job_id)
    partial = target.parent / f".{job_id}.partial"
    partial.mkdir(parents=True)
    try:
        task = video_task(spec, partial / "video.mp4")
        with ray_session(address, num_cpus=pool_config.workers if address is None else None):
            with DevicePool(pool_config) as pool:
                metadata = run_video_render(pool, task, spec.parallel.degree, progress=progress)
                device = pool.slot.kind
        metadata = dict(
            metadata,
            job_id=job_id,
            spec=spec.to_dict(),
            seed=spec.seed,
            device=device,
            versions=package_versions(),
            outputs={"video": str(target / "video.mp4")},
        )
        (partial / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
