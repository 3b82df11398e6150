"""The worker actor: one per GPU, or one per CPU slot with one torch thread.

The class is plain Python; `runtime.pool` turns it into a Ray actor placed in a placement group
bundle. It owns the device, the model cache, the worker's membership in a job's process group,
and the worker's part of the running render.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from runtime import heap, memory, process_group
from runtime.attention import enable_fast_attention
from runtime.device import CUDA, DeviceSlot
from runtime.model_cache import ModelCache


def _busy(method: Callable[..., Any]) -> Callable[..., Any]:
    """Count the seconds a worker spends in `method` as busy (for utilisation figures)."""

    @functools.wraps(method)
    def timed(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.busy_s += time.perf_counter() - started

    return timed


class Worker:
    def __init__(self, index: int, slot: DeviceSlot) -> None:
        torch.set_num_threads(slot.torch_threads)
        self.index = index
        self.slot = slot
        self.device = "cuda:0" if slot.kind == CUDA else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per actor
        self.mmap_threshold = heap.fix_mmap_threshold(self.device)
        """glibc's fixed mmap threshold set for this CPU worker (``runtime.heap``), None where glibc's is left."""
        self.cache = ModelCache()
        self.rank: int | None = None
        self.session = None
        self.attention: dict[tuple[str, str], str] = {}
        """The attention kernel of each pipeline loaded here, by (model path, dtype): what enable_fast_attention
        chose for this worker's device ("sdpa" on CPU and without xformers, "xformers" on CUDA with it)."""
        self.busy_s = 0.0
        self.last_decode_s = 0.0
        self.faults_at_begin = 0

    def info(self) -> dict:
        import ray

        return {
            "index": self.index,
            "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "mmap_threshold": self.mmap_threshold,
        }

    # --- process groups -------------------------------------------------------------------------
    def free_port(self) -> int:
        return process_group.find_free_port()

    def join_group(self, spec: process_group.GroupSpec, rank: int) -> int:
        process_group.join(spec, rank)
        self.rank = rank
        return rank

    def leave_group(self) -> bool:
        self.rank = None
        self._close_session()
        return process_group.leave()

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(worker, *args, **kwargs)` here: the hook for strategies and tests."""
        return fn(self, *args, **kwargs)

    # --- models ---------------------------------------------------------------------------------
    def load_pipeline(self, path: str, dtype: str) -> tuple[Any, bool]:
        """The model at ``path`` as its family loads it (a diffusers pipeline, or the family's own), cached."""
        from pipelines.families import family_for_dir

        def load() -> Any:
            pipe = family_for_dir(path).load(path, dtype, self.device)
            self.attention[(str(path), dtype)] = enable_fast_attention(pipe, self.device)
            return pipe

        return self.cache.get_or_load(path, dtype, self.device, load)

    def preload(self, path: str, dtype: str) -> dict:
        started = time.perf_counter()
        _, hit = self.load_pipeline(path, dtype)
        return {"cache_hit": hit, "seconds": time.perf_counter() - started}

    def busy_seconds(self) -> float:
        """Seconds spent rendering (begin, steps, snapshots, decode, end) since the worker started."""
        return self.busy_s

    def cache_stats(self) -> dict:
        return {"hits": self.cache.hits, "misses": self.cache.misses, "entries": len(self.cache.entries)}

    # --- jobs: one protocol for every kind (runtime.jobs.driver) ---------------------------------
    @_busy
    def begin(self, open_session: Callable[..., Any], spec: Any, resume: dict | None = None, **options: Any) -> dict:
        """Set up this worker's part of a job: load ``spec.model`` (a directory) through the model cache and
        open the kind's session, ``open_session(pipe, spec, resume, **options)``, from ``resume`` (a
        checkpoint state) when given."""
        self._close_session()
        self.last_decode_s = 0.0
        started = time.perf_counter()
        pipe, hit = self.load_pipeline(spec.model, spec.dtype)
        load_s = time.perf_counter() - started
        resident = memory.current_bytes(self.device)
        memory.reset_peak(self.device)
        self.faults_at_begin = memory.minor_faults()
        self.session = open_session(pipe, spec, resume, **options)
        return {
            "cache_hit": hit,
            "load_s": load_s,
            "encode_s": self.session.encode_s,
            "attention": self.attention[(str(spec.model), spec.dtype)],
            "resident_bytes": resident,
        }

    @_busy
    def advance(self, units: int = 1) -> int:
        """Run the next ``units`` units (denoising steps, a video's queue ticks); the units done so far."""
        return self._session().advance(units)

    @_busy
    def snapshot(self, segment_end: bool = False) -> dict:
        """This worker's share of the job's state, for a checkpoint: at the current unit boundary, or at the
        latest one the job can resume from exactly (a step cache's last full step; ``runtime.jobs.image_session``).
        ``segment_end``: the exact state where this segment hands over to the next."""
        return self._session().snapshot(segment_end=segment_end)

    @_busy
    def result(self) -> Any:
        """What the session produced here (an image band's latent; None for a video, which writes its own)."""
        return self._session().result()

    @_busy
    def finish(self) -> dict:
        """Close the session; its report, with this worker's peak memory."""
        report = dict(
            self._session().finish(),
            peak_memory_bytes=memory.peak_bytes(self.device),
            minor_faults=memory.minor_faults() - self.faults_at_begin,  # since begin: the session's own
            decode_s=self.last_decode_s,  # of a decode queued before this call (see runtime.jobs.image)
            busy_s=self.busy_s,  # since the worker started, this call left out: cluster.metrics counts its growth
        )
        self._close_session()
        return report

    @_busy
    def decode_latents(self, path: str, dtype: str, latents: torch.Tensor) -> np.ndarray:
        """Decode a stitched latent with this worker's cached VAE (tiled for large images)."""
        from pipelines.sampling import decode_latents

        started = time.perf_counter()
        pipe, _ = self.load_pipeline(path, dtype)
        image = decode_latents(pipe, latents)
        self.last_decode_s = time.perf_counter() - started
        return image

    def _session(self):
        if self.session is None:
            raise RuntimeError(f"worker {self.index} has no job in progress")
        return self.session
