"""Drive one render on a group of pool workers: steps with progress, gather the latent, decode.

The coordinator advances every worker one denoising step at a time, so progress is reported per step
and a job can later be paused, checkpointed or moved at any step boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray
import torch
from tqdm import tqdm

from cluster.spec import RenderSpec
from runtime.pool import DevicePool
from runtime.render_task import RenderTask


@dataclass
class RenderResult:
    image: np.ndarray
    """Float RGB image in [0, 1], [height, width, 3]."""
    metadata: dict
    """Timings, devices, per-worker peak memory."""


def render_task(spec: RenderSpec) -> RenderTask:
    return RenderTask(
        model_path=spec.model_path(),
        dtype=spec.dtype,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        height=spec.height,
        width=spec.width,
        steps=spec.steps,
        seed=spec.seed,
        guidance_scale=float(spec.guidance_scale),
        sampler=spec.sampler,
    )


def run_render(pool: DevicePool, spec: RenderSpec, progress: bool = True) -> RenderResult:
    spec.check_fits(pool.size)
    indices = list(range(spec.parallel.degree))
    workers = [pool.workers[i] for i in indices]
    task = render_task(spec)
    started = time.perf_counter()
    with pool.group(indices) as group:
        begin = ray.get([w.begin_render.remote(task) for w in workers])
        denoise_started = time.perf_counter()
        for _ in tqdm(range(spec.steps), desc="denoising", unit="step", disable=not progress):
            ray.get([w.step.remote() for w in workers])
        denoise_s = time.perf_counter() - denoise_started
        bands = ray.get([w.latents.remote() for w in workers])
        latents = torch.cat(bands, dim=2)
        decode_started = time.perf_counter()
        image = ray.get(workers[0].decode.remote(latents))
        decode_s = time.perf_counter() - decode_started
        ends = ray.get([w.end_render.remote() for w in workers])
        backend = group.spec.backend
    metadata = {
        "strategy": spec.parallel.strategy,
        "degree": spec.parallel.degree,
        "backend": backend,
        "attention": begin[0]["attention"],
        "timings": {
            "load_s": max(b["load_s"] for b in begin),
            "encode_s": max(b["encode_s"] for b in begin),
            "denoise_s": denoise_s,
            "step_s": ends[0]["step_seconds"],
            "decode_s": decode_s,
            "total_s": time.perf_counter() - started,
        },
        "model_cache_hit": [b["cache_hit"] for b in begin],
        "workers": [
            dict(pool.infos[i], peak_memory_bytes=e["peak_memory_bytes"]) for i, e in zip(indices, ends)
        ],
    }
    return RenderResult(image=image, metadata=metadata)
