"""Drive one image render (or one segment of it) on a group of pool workers: steps, stitch, decode.

Every worker runs a ``runtime.jobs.image_session.RenderSession`` on its row band (or the whole latent).
The driver queues one step at a time on every worker (``runtime.jobs.driver.drive``), so progress is
reported per step and a job can be paused, checkpointed or moved at any step boundary; the bands'
states are stitched into one full-image state (any band count can continue it).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from pipelines.render_state import stitch_states
from runtime.jobs.driver import CheckpointSink, Refs, UnitHook, WorkerGroupDriver, drive, get_all
from runtime.jobs.image_session import open_render_session


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


def stitch_bands(reports: list[dict], bands: list[torch.Tensor]) -> torch.Tensor:
    """One copy of each band, in row order (CFG partners hold identical copies of the same band)."""
    by_index: dict[int, torch.Tensor] = {}
    for report, band in zip(reports, bands):
        by_index.setdefault(report["band"], band)
    return torch.cat([by_index[i] for i in sorted(by_index)], dim=2)


def stitch_snapshots(states: list[dict]) -> dict:
    """The full-image state, stitched from one copy of each band (CFG partners hold the same band)."""
    by_rows: dict[tuple[int, int], dict] = {}
    for state in states:
        by_rows.setdefault(tuple(state["rows"]), state)
    return stitch_states(list(by_rows.values()))


class ImageDriver(WorkerGroupDriver):
    """The ``JobDriver`` of an image render: one denoising step per call, two kept queued per worker."""

    units_per_call = 1
    queue_depth = 2

    def __init__(self, workers: list, spec: Any, until: int, decode: bool, on_last_call=None) -> None:
        super().__init__(workers, spec)
        self.until = until
        self.decode = decode
        self.on_last_call = on_last_call
        self.single = spec.parallel.strategy == "none"
        self.closing: dict[str, Refs] = {}

    def begin(self, resume: dict | None) -> Refs:
        return [w.begin.remote(open_render_session, self.spec, resume) for w in self.workers]

    def state(self, refs: Refs) -> dict:
        return stitch_snapshots(get_all(refs))

    def after_last(self) -> None:
        """Everything after the last step, queued at once: a worker runs it back to back, and a single
        band is decoded from the worker's own result without a trip through the driver."""
        workers, closing, last = self.workers, self.closing, self.until == self.spec.steps
        if not last:  # the exact state at the segment's end, whatever a step cache would resume from
            closing["snapshots"] = [w.snapshot.remote(segment_end=True) for w in workers]
        closing["bands"] = [w.result.remote() for w in workers]
        if self.decode and last and len(workers) == 1:
            closing["decode"] = [workers[0].decode_latents.remote(self.spec.model, self.spec.dtype, closing["bands"][0])]
        closing["ends"] = [w.finish.remote() for w in workers]
        # with a process group the workers still have to leave it, so nothing may be queued behind these
        # calls yet; one worker on the whole latent is free for its next job once these are queued. Not at a
        # segment boundary: the job itself goes first there, queued again as its workers are freed
        if self.on_last_call is not None and self.single and last and ("decode" in closing or not self.decode):
            self.on_last_call()


def run_render(
    pool: Any,
    spec: Any,
    progress: bool = True,
    decode: bool = True,
    on_step: UnitHook | None = None,
    resume: dict | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointSink | None = None,
    indices: list[int] | None = None,
    until: int | None = None,
    on_last_call=None,
) -> RenderResult:
    """Run (or continue, from `resume`) one render of ``spec`` (a placed image spec: ``cluster.jobs.image``)
    on ``degree`` pool workers (`indices`, by default the first ones), up to step `until` (the job's last
    step by default).

    Every `checkpoint_every` steps the state goes to `on_checkpoint`; when `on_step` says stop, the
    state at that step boundary travels in the ``JobStopped`` exception. A segment that ends before the
    job's last step returns its end state in `RenderResult.checkpoint`, to continue elsewhere.
    `on_last_call` runs once every call this render makes to its workers has been queued on them: from
    then on a worker's next job can be queued behind them (Ray runs an actor's calls in order).
    """
    spec.check_fits(pool.size)
    indices = list(range(spec.parallel.degree)) if indices is None else list(indices)
    if len(indices) != spec.parallel.degree:
        raise ValueError(f"degree {spec.parallel.degree} needs as many workers, got {indices}")
    if spec.model != spec.model_path():
        spec = spec.placed(spec.model, spec.parallel.degree)  # the workers load a directory
    until = spec.steps if until is None else until
    workers = [pool.workers[i] for i in indices]
    driver = ImageDriver(workers, spec, until, decode, on_last_call)
    started = time.perf_counter()
    first = resume["step_index"] if resume else 0
    # one worker on the whole latent talks to nobody: no process group to form (and tear down)
    with contextlib.nullcontext() if driver.single else pool.group(indices) as group:
        begin, step_s = drive(driver, first, until, resume, progress, on_step, checkpoint_every, on_checkpoint)
        closing = driver.closing
        end_state = driver.state(closing["snapshots"]) if "snapshots" in closing else None
        bands = get_all(closing["bands"])
        decode_started = time.perf_counter()
        image = get_all(closing["decode"])[0] if "decode" in closing else None
        ends = get_all(closing["ends"])
        latents = stitch_bands(ends, bands) if end_state is None else None
        if "decode" in closing:
            decode_s = ends[0].get("decode_s", time.perf_counter() - decode_started)
        elif decode and latents is not None:
            decode_started = time.perf_counter()
            image = ray.get(workers[0].decode_latents.remote(spec.model, spec.dtype, latents))
            decode_s = time.perf_counter() - decode_started
        else:
            decode_s = 0.0
        backend = None if driver.single else group.spec.backend
    par = spec.parallel
    metadata = {
        "strategy": par.strategy,
        "degree": par.degree,
        "mode": par.mode if par.strategy == "patch" else None,
        "warmup_steps": par.warmup_steps if par.strategy == "patch" else None,
        "stale_dtype": par.stale_dtype if par.mode == "displaced" else None,
        "kv_source": par.kv_source if par.strategy == "patch" else None,
        "cfg_parallel": par.cfg,
        "backend": backend,
        "attention": begin[0]["attention"],
        "cache": ends[0].get("cache"),
        "compile": ends[0].get("compile"),
        "resumed_from_step": first,
        "until_step": until,
        "model_path": spec.model,
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
        busy_s=end["busy_s"],
    )
    if "sequence" in end:  # Ulysses and Ring degrees this worker ran, and what it took (parallel.sequence)
        summary["sequence"] = end["sequence"]
    if "cache" in end:  # the same on every worker of the job (parallel.cache.step_cache)
        summary["cache_reused_steps"] = end["cache"]["reused_steps"]
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
