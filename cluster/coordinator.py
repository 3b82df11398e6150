"""Drive one render on a group of pool workers: steps with progress, stitch the bands, decode.

The coordinator advances every worker one denoising step at a time, so progress is reported per step
and a job can later be paused, checkpointed or moved at any step boundary.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
import torch
from tqdm import tqdm

from cluster.spec import RenderSpec
from pipelines.render_state import stitch_states
from runtime.pool import DevicePool
from runtime.pool_set import PoolSet
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
        stale_dtype=par.stale_dtype,
        kv_source=par.kv_source,
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


QUEUED_STEPS = 2
"""Steps kept queued on each worker: the one it runs and the next (see `_run_steps`)."""

StepHook = Callable[[int], bool]
"""Called after every step with the number of steps done; returning False stops the render."""

CheckpointSink = Callable[[dict], None]
"""Receives the full-image render state (pipelines.render_state) to store."""


def stitch_snapshots(states: list[dict]) -> dict:
    """The full-image state, stitched from one copy of each band (CFG partners hold the same band)."""
    by_rows: dict[tuple[int, int], dict] = {}
    for state in states:
        by_rows.setdefault(tuple(state["rows"]), state)
    return stitch_states(list(by_rows.values()))


def gather_checkpoint(workers: list) -> dict:
    return stitch_snapshots(ray.get([w.snapshot.remote() for w in workers]))


def run_render(
    pool: DevicePool | PoolSet,
    spec: RenderSpec,
    progress: bool = True,
    decode: bool = True,
    on_step: StepHook | None = None,
    resume: dict | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointSink | None = None,
    indices: list[int] | None = None,
    until: int | None = None,
    on_last_call: Callable[[], None] | None = None,
) -> RenderResult:
    """Run (or continue, from `resume`) one render on `degree` pool workers (`indices`, by default
    the first ones), up to step `until` (the job's last step by default).

    Every `checkpoint_every` steps the state goes to `on_checkpoint`; when `on_step` says stop, the
    state at that step boundary travels in the RenderStopped exception. A segment that ends before
    the job's last step returns its end state in `RenderResult.checkpoint`, to continue elsewhere.
    `on_last_call` runs once every call this render makes to its workers has been queued on them: from
    then on a worker's next job can be queued behind them (Ray runs an actor's calls in order).
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
        first = resume["step_index"] if resume else 0
        begin_refs = [w.begin_render.remote(task, resume) for w in workers]
        closing: dict = {}

        def queue_closing() -> None:
            """Everything after the last step, queued at once: a worker runs it back to back, and a
            single band is decoded from the worker's own result without a trip through the driver."""
            if until < spec.steps:
                closing["snapshots"] = [w.snapshot.remote() for w in workers]
            closing["bands"] = [w.latents.remote() for w in workers]
            if decode and until == spec.steps and len(workers) == 1:
                closing["decode"] = workers[0].decode_latents.remote(
                    task.model_path, task.dtype, closing["bands"][0]
                )
            closing["ends"] = [w.end_render.remote() for w in workers]
            # with a process group the workers still have to leave it (on leaving the `with`), so
            # nothing may be queued behind these calls yet
            if on_last_call is not None and single and ("decode" in closing or not decode or until < spec.steps):
                on_last_call()

        step_s = _run_steps(
            workers, first, until, progress, on_step, checkpoint_every, on_checkpoint, begin_refs, queue_closing
        )
        begin = ray.get(begin_refs)
        end_state = stitch_snapshots(ray.get(closing["snapshots"])) if "snapshots" in closing else None
        bands = ray.get(closing["bands"])
        decode_started = time.perf_counter()
        image = ray.get(closing["decode"]) if "decode" in closing else None
        ends = ray.get(closing["ends"])
        latents = stitch_bands(ends, bands) if end_state is None else None
        if "decode" in closing:
            decode_s = ends[0].get("decode_s", time.perf_counter() - decode_started)
        elif decode and latents is not None:
            decode_started = time.perf_counter()
            image = ray.get(workers[0].decode_latents.remote(task.model_path, task.dtype, latents))
            decode_s = time.perf_counter() - decode_started
        else:
            decode_s = 0.0
        backend = None if single else group.spec.backend
    metadata = {
        "strategy": spec.parallel.strategy,
        "degree": spec.parallel.degree,
        "mode": spec.parallel.mode if spec.parallel.strategy == "patch" else None,
        "warmup_steps": spec.parallel.warmup_steps if spec.parallel.strategy == "patch" else None,
        "stale_dtype": spec.parallel.stale_dtype if spec.parallel.mode == "displaced" else None,
        "kv_source": spec.parallel.kv_source if spec.parallel.strategy == "patch" else None,
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


def _run_steps(
    workers: list,
    first: int,
    until: int,
    progress: bool,
    on_step: StepHook | None,
    checkpoint_every: int,
    on_checkpoint: CheckpointSink | None,
    begin_refs: list,
    after_last_queued: Callable[[], None],
) -> list[float]:
    """Steps `first`..`until` on every worker; returns the seconds between consecutive step results.

    The first steps are queued behind `begin_refs` (the workers' begin_render calls) without waiting
    for them; `after_last_queued` runs as soon as the last step is queued, to queue what follows it.

    Two steps are kept queued on the workers: while a worker runs one, the next waits in its mailbox,
    so it never idles for a round trip through the driver (progress, store writes, the next call).
    A stop asked for after step k therefore lands at step k + 1, the step already queued (still a step
    boundary), and when that was the last step the render simply completes. A checkpoint's snapshot is
    queued right behind its step, so it holds exactly that step's state.
    """
    step_s: list[float] = []
    queued = first
    inflight: deque[list] = deque()
    snapshots: dict[int, list] = {}

    def checkpoint_at(step: int) -> bool:
        return bool(checkpoint_every and on_checkpoint and step % checkpoint_every == 0 and step < until)

    def queue_step() -> None:
        nonlocal queued
        queued += 1
        inflight.append([w.step.remote() for w in workers])
        if checkpoint_at(queued):
            snapshots[queued] = [w.snapshot.remote() for w in workers]
        if queued == until:
            after_last_queued()

    bar = tqdm(total=until - first, desc="denoising", unit="step", disable=not progress)
    for _ in range(min(QUEUED_STEPS, until - first)):
        queue_step()
    if not inflight:
        after_last_queued()
    ray.get(begin_refs)  # a failed set-up is reported as itself, not as the queued step's failure
    last = time.perf_counter()

    def next_result() -> int:
        nonlocal last
        done = ray.get(inflight.popleft())[0]
        now = time.perf_counter()
        step_s.append(now - last)
        last = now
        bar.update(1)
        return done

    try:
        while inflight:
            done = next_result()
            if done in snapshots:
                on_checkpoint(stitch_snapshots(ray.get(snapshots.pop(done))))
            if on_step is not None and not on_step(done):
                if inflight:  # the step already queued runs; stop after it
                    done = next_result()
                    on_step(done)
                    if done == until:  # nothing left to stop: the render (or segment) is complete
                        break
                raise RenderStopped(done, gather_checkpoint(workers))
            if queued < until:
                queue_step()
    finally:
        bar.close()
    return step_s


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
