"""Drive one render on a group of pool workers: steps with progress, stitch the bands, decode.

The coordinator advances every worker one denoising step at a time, so progress is reported per step
and a job can later be paused, checkpointed or moved at any step boundary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
import torch
from tqdm import tqdm

from cluster.spec import RenderSpec
from pipelines.render_state import stitch_states
from runtime.pool import DevicePool
from runtime.render_task import RenderTask


@dataclass
class RenderResult:
    image: np.ndarray | None
    """Float RGB image in [0, 1], [height, width, 3]; None when not decoded or the segment ended early."""
    latents: torch.Tensor | None
    """The final latent, stitched from the bands; None when the segment ended before the last step."""
    metadata: dict
    """Strategy, timings, traffic, per-worker memory."""
    checkpoint: dict | None = None
    """The state at the segment's end, when it stopped before the job's last step (see `until`)."""


def render_task(spec: RenderSpec) -> RenderTask:
    par = spec.parallel
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
        strategy=par.strategy,
        mode=par.mode,
        warmup_steps=par.warmup_steps,
        cfg=par.cfg,
    )


def stitch_bands(reports: list[dict], bands: list[torch.Tensor]) -> torch.Tensor:
    """One copy of each band, in row order (CFG partners hold identical copies of the same band)."""
    by_index: dict[int, torch.Tensor] = {}
    for report, band in zip(reports, bands):
        by_index.setdefault(report["band"], band)
    return torch.cat([by_index[i] for i in sorted(by_index)], dim=2)


class RenderStopped(Exception):
    """The step hook asked the render to stop at a step boundary (cancel or pause).

    `checkpoint` is the state at that boundary, so the render can continue from it later."""

    def __init__(self, steps_done: int, checkpoint: dict) -> None:
        super().__init__(f"stopped after {steps_done} steps")
        self.steps_done = steps_done
        self.checkpoint = checkpoint


StepHook = Callable[[int], bool]
"""Called after every step with the number of steps done; returning False stops the render."""

CheckpointSink = Callable[[dict], None]
"""Receives the full-image render state (pipelines.render_state) to store."""


def gather_checkpoint(workers: list) -> dict:
    """The full-image state, stitched from one copy of each band (CFG partners hold the same band)."""
    by_rows: dict[tuple[int, int], dict] = {}
    for state in ray.get([w.snapshot.remote() for w in workers]):
        by_rows.setdefault(tuple(state["rows"]), state)
    return stitch_states(list(by_rows.values()))


def run_render(
    pool: DevicePool,
    spec: RenderSpec,
    progress: bool = True,
    decode: bool = True,
    on_step: StepHook | None = None,
    resume: dict | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointSink | None = None,
    indices: list[int] | None = None,
    until: int | None = None,
) -> RenderResult:
    """Run (or continue, from `resume`) one render on `degree` pool workers (`indices`, by default
    the first ones), up to step `until` (the job's last step by default).

    Every `checkpoint_every` steps the state goes to `on_checkpoint`; when `on_step` says stop, the
    state at that step boundary travels in the RenderStopped exception. A segment that ends before
    the job's last step returns its end state in `RenderResult.checkpoint`, to continue elsewhere.
    """
    spec.check_fits(pool.size)
    indices = list(range(spec.parallel.degree)) if indices is None else list(indices)
    if len(indices) != spec.parallel.degree:
        raise ValueError(f"degree {spec.parallel.degree} needs as many workers, got {indices}")
    until = spec.steps if until is None else until
    workers = [pool.workers[i] for i in indices]
    task = render_task(spec)
    started = time.perf_counter()
    # one worker on the whole latent talks to nobody: no process group to form (and tear down)
    single = spec.parallel.strategy == "none"
    with contextlib.nullcontext() if single else pool.group(indices) as group:
        begin = ray.get([w.begin_render.remote(task, resume) for w in workers])
        first = resume["step_index"] if resume else 0
        step_s = []
        for _ in tqdm(range(first, until), desc="denoising", unit="step", disable=not progress):
            step_started = time.perf_counter()
            done = ray.get([w.step.remote() for w in workers])[0]
            step_s.append(time.perf_counter() - step_started)
            if on_step is not None and not on_step(done):
                raise RenderStopped(done, gather_checkpoint(workers))
            if checkpoint_every and on_checkpoint and done % checkpoint_every == 0 and done < until:
                on_checkpoint(gather_checkpoint(workers))
        end_state = gather_checkpoint(workers) if until < spec.steps else None
        bands = ray.get([w.latents.remote() for w in workers])
        ends = ray.get([w.end_render.remote() for w in workers])
        latents = stitch_bands(ends, bands) if end_state is None else None
        decode_started = time.perf_counter()
        image = (
            ray.get(workers[0].decode_latents.remote(task.model_path, task.dtype, latents))
            if decode and latents is not None
            else None
        )
        decode_s = time.perf_counter() - decode_started
        backend = None if single else group.spec.backend
    metadata = {
        "strategy": spec.parallel.strategy,
        "degree": spec.parallel.degree,
        "mode": spec.parallel.mode if spec.parallel.strategy == "patch" else None,
        "warmup_steps": spec.parallel.warmup_steps if spec.parallel.strategy == "patch" else None,
        "cfg_parallel": spec.parallel.cfg,
        "backend": backend,
        "attention": begin[0]["attention"],
        "resumed_from_step": first,
        "until_step": until,
        "model_path": task.model_path,
        "timings": {
            "load_s": max(b["load_s"] for b in begin),
            "encode_s": max(b["encode_s"] for b in begin),
            "denoise_s": sum(step_s),
            "step_s": step_s,
            "decode_s": decode_s,
            "total_s": time.perf_counter() - started,
        },
        "model_cache_hit": [b["cache_hit"] for b in begin],
        "workers": [
            _worker_summary(pool.infos[i], b, e, max(1, len(step_s))) for i, b, e in zip(indices, begin, ends)
        ],
    }
    return RenderResult(image=image, latents=latents, metadata=metadata, checkpoint=end_state)


def _worker_summary(info: dict, begin: dict, end: dict, steps: int) -> dict:
    summary = dict(info)
    summary.update(
        band=end["band"],
        rows=end["rows"],
        branch=end.get("branch", "both"),
        peak_memory_bytes=end["peak_memory_bytes"],
        activation_peak_bytes=max(0, end["peak_memory_bytes"] - begin["resident_bytes"]),
    )
    if "bytes_sent" in end:
        sent = end["bytes_sent"]
        per_kind = {kind: sum(peers.values()) for kind, peers in sent.items()}
        per_peer: dict[int, int] = {}
        for peers in sent.values():
            for peer, nbytes in peers.items():
                per_peer[peer] = per_peer.get(peer, 0) + nbytes
        summary["bytes_sent_per_step"] = sum(per_kind.values()) / steps
        summary["bytes_sent_per_step_by_kind"] = {k: v / steps for k, v in per_kind.items()}
        summary["bytes_sent_by_peer"] = per_peer
        summary["bytes_sent_by_kind_and_peer"] = sent
    return summary
