"""Drive one video render on a group of pool workers: every stage advances a few queue ticks per call.

All stages run concurrently inside each round of calls (their ring traffic needs all of them), and the
driver reports progress between rounds (``runtime.jobs.driver.drive``). Stage 0 streams the MP4 itself,
so no frames pass through the driver and its memory does not grow with the video.

A service job (``block_dir`` given) keeps finished blocks as MP4 segments, may start from a checkpoint,
has its state gathered every ``checkpoint_every`` ticks, and stops at a tick boundary when ``on_tick``
says so (``JobStopped`` carries the state there).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runtime.jobs.driver import CheckpointSink, JobStopped, Refs, UnitHook, WorkerGroupDriver, drive, get_all
from runtime.jobs.video_session import open_video_session
from runtime.jobs.video_state import merge_stage_states


class VideoDriver(WorkerGroupDriver):
    """The ``JobDriver`` of a video render: every stage advances ``ticks_per_call`` ticks per call, and the
    next call is queued behind the running one, so the stages never meet at a barrier between rounds.

    With one call in flight, every round ended when the slowest stage finished its last item: the first
    stage idled through the last stage's final item and the last stage through the first stage's opening
    item, about one item per stage per round lost (a round being one tick in the service). Two calls queued
    let each stage go on into the next tick as soon as its own items are done; the ring traffic between
    the stages orders the items exactly as before, so the output is unchanged."""

    queue_depth = 2

    def __init__(self, workers: list, spec: Any, ticks_per_call: int, until: int, **options: Any) -> None:
        super().__init__(workers, spec)
        self.units_per_call = ticks_per_call
        self.until = until
        self.options = options
        self.ends: Refs = []

    def begin(self, resume: dict | None) -> Refs:
        return [w.begin.remote(open_video_session, self.spec, resume, **self.options) for w in self.workers]

    def state(self, refs: Refs) -> dict[str, Any]:
        """The job's state at the current tick boundary, merged from every stage (stage 0 first)."""
        return merge_stage_states(get_all(refs))

    def after_last(self) -> None:
        if self.until == self.spec.progress_total():  # a segment that ends earlier leaves its stages open
            self.ends = [w.finish.remote() for w in self.workers]


def run_video_render(
    pool: Any,
    spec: Any,
    video_path: str | Path,
    progress: bool = True,
    ticks_per_call: int = 4,
    indices: list[int] | None = None,
    block_dir: str | None = None,
    resume: dict[str, Any] | None = None,
    on_tick: UnitHook | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointSink | None = None,
    until: int | None = None,
) -> dict:
    """Render ``spec`` (a placed video spec, ``cluster.jobs.video``: its degree is the stage count) on pool
    workers ``indices`` (the first ones by default), stage 0 writing ``video_path``; returns metadata.
    With ``block_dir`` (a service job): finished blocks go there as files, the render continues from
    ``resume`` (a merged checkpoint state), ``on_tick`` is called with the ticks done after every call
    (False stops: JobStopped) and the state goes to ``on_checkpoint`` every ``checkpoint_every`` ticks.
    ``until``: a segment that ends at that tick, before the video's last; no call is queued past it, and
    it ends in ``JobStopped`` carrying the state there, as a pause at that tick would."""
    degree = spec.parallel.degree
    if degree > pool.size:
        raise ValueError(f"parallel.degree: {degree} stages exceed the pool's {pool.size} workers")
    indices = list(range(degree)) if indices is None else list(indices)
    if len(indices) != degree:
        raise ValueError(f"parallel.degree: {degree} stages need as many workers, got {indices}")
    if resume is not None and block_dir is None:
        raise ValueError("resume: a checkpointed video render keeps its blocks in block_dir")
    if spec.model != spec.model_path():
        spec = spec.placed(spec.model, degree)  # the workers load a directory
    workers = [pool.workers[i] for i in indices]
    options = {"video_path": str(Path(video_path).resolve()), "block_dir": block_dir}
    ticks = spec.progress_total()
    end = ticks if until is None else until
    if not 0 < end <= ticks:
        raise ValueError(f"until: tick {end} is outside the video's 1..{ticks}")
    driver = VideoDriver(workers, spec, ticks_per_call, end, **options)
    started = time.perf_counter()
    first = resume["tick"] if resume else 0
    with pool.group(indices) as group:
        begins, tick_s = drive(driver, first, end, resume, progress, on_tick, checkpoint_every, on_checkpoint, "tick")
        if end < ticks:
            raise JobStopped(end, driver.state(driver.snapshot()))
        drove = time.perf_counter()
        ends = get_all(driver.ends)
        render_s = sum(tick_s) + time.perf_counter() - drove  # from the stages' set-up to the video's close
        backend = group.spec.backend
    head = ends[0]
    first_frames = head["frames_before"]  # decoded frames on disk before a resume (not blocks x block_frames)
    return {
        "strategy": spec.parallel.strategy,  # "none": the frame pipeline on one stage
        "degree": degree,
        "stages": spec.parallel.split_degree if spec.parallel.strategy == "frames" else degree,  # cfg: per branch
        "backend": backend,
        "frames": head["frames"],
        "blocks": head["blocks"],
        "block_frames": spec.block_frames,
        "context_frames": spec.context_frames,
        "block_stride": spec.block_stride,
        "steps": spec.steps,
        "fps": spec.fps,
        "stage_boundaries": head["boundaries"],
        "layer_costs_s": head["layer_costs_s"],
        "decode_s_per_block": head["block_overhead_s"],
        "decode_shares": head["decode_shares"],  # each block's latent frames decoded per stage
        "frames_per_s": (head["frames"] - first_frames) / render_s,
        "resumed_from_tick": first,
        "frames_written": head["frames_written"],
        "timings": {
            "load_s": max(b["load_s"] for b in begins),
            "encode_s": max(e["encode_s"] for e in ends),
            "setup_s": max(e["setup_s"] for e in ends),
            "render_s": render_s,
            "decode_s": head["decode_s"],
            "total_s": time.perf_counter() - started,
        },
        "model_cache_hit": [b["cache_hit"] for b in begins],
        "workers": [_worker_summary(pool.infos[i], b, e) for i, b, e in zip(indices, begins, ends)],
    }


def _worker_summary(info: dict, begin: dict, end: dict) -> dict:
    summary = dict(info)
    summary.update(
        stage=end["stage"],
        layers=end["layers"],
        items=end["items"],
        compute_s=end["compute_s"],
        compute_cpu_s=end["compute_cpu_s"],
        decode_cpu_s=end["decode_cpu_s"],
        heap_trims=end["heap_trims"],
        heap_trim_s=end["heap_trim_s"],
        wait_s=end["wait_s"],
        bytes_sent_by_peer=end["bytes_sent_by_peer"],
        feature_cache_peak_bytes=end["feature_cache_peak_bytes"],
        peak_memory_bytes=end["peak_memory_bytes"],
        minor_faults=end["minor_faults"],
        activation_peak_bytes=max(0, end["peak_memory_bytes"] - begin["resident_bytes"]),
        busy_s=end["busy_s"],
    )
    for split in ("sequence", "bands", "cfg"):  # what a whole-video strategy did: Ulysses, bands, the branch split
        if split in end:
            summary[split] = end[split]
    return summary
