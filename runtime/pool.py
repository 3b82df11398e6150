"""A device pool: N worker actors placed with a Ray placement group.

On CUDA each worker holds one GPU; without GPUs each holds one CPU slot and runs one torch thread.
Both are plain Ray resources in the bundle, so the same scheduling code serves both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from runtime.device import device_slot, resolve_device_kind
from runtime.heap import THRESHOLD_ENV, parse_threshold, worker_env
from runtime.job_group import JobGroup
from runtime.worker import Worker

PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PoolError(RuntimeError):
    """The cluster cannot host the requested pool."""


@dataclass
class PoolConfig:
    name: str = "default"
    """The pool's name; a job asks for it with its `device` field (or for its device kind)."""
    workers: int = 2
    """Number of worker actors (GPUs, or CPU slots)."""
    device: str = "auto"
    """"cpu", "cuda", or "auto" (CUDA when the cluster has a GPU per worker)."""
    placement: str = "PACK"
    """Placement group strategy: PACK keeps workers on few nodes, STRICT_SPREAD one per node."""
    ready_timeout_s: float = 120.0
    """Seconds to wait for the placement group and the actors before giving up."""
    group_timeout_s: float = 120.0
    """Seconds a process-group rendezvous or collective may take before it is an error."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each worker also asks for, e.g. {"h100": 1} to keep this pool on the nodes
    started with `ray start --resources '{"h100": 8}'`."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables of the worker processes (a Ray runtime_env), e.g. {"MALLOC_MMAP_THRESHOLD_":
    "131072"}: glibc then maps every tensor over 128 KiB on its own and returns it when freed, so a long
    video's resident memory follows its live tensors instead of the heap's fragments (BENCHMARKS.md,
    "video-memory"), at a price in speed on CPU (every large tensor is mapped and faulted in anew: about 40%
    slower frame pipeline renders there). CPU workers already fix glibc's threshold at 8 MiB and trim the heap
    after each video block, which keeps a long video's memory flat too, and start with malloc's transparent huge
    pages (``runtime.heap``: ``TESSERA_MMAP_THRESHOLD`` sets another threshold, 0 leaves glibc's dynamic one;
    ``TESSERA_HEAP_TRIM=0`` turns the trim off; ``GLIBC_TUNABLES`` replaces the huge-page tunable, "" for none)."""

    def __post_init__(self) -> None:
        if self.resources is None:  # Hydra's `resources: null` (a null default lets `pool.resources={..}` set it)
            self.resources = {}
        if self.env is None:
            self.env = {}
        # `pool.env={MALLOC_MMAP_THRESHOLD_: 131072}` on the command line arrives as a number
        self.env = {k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in self.env.items()}


def remove_stale_placement_group(name: str, timeout_s: float = 30.0) -> None:
    """Remove the placement group called ``name`` if one is left, and wait until Ray has let it go."""
    try:
        stale = ray.util.get_placement_group(name)
    except ValueError:  # none of that name
        return
    remove_placement_group(stale)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.util.get_placement_group(name)
        except ValueError:
            return
        time.sleep(0.1)


class DevicePool:
    def __init__(self, config: PoolConfig, placement_name: str = "") -> None:
        """``placement_name`` names the placement group: a pool of that name left by a dead owner (a killed
        controller, whose group outlives it until the Ray job ends) is removed first, so its devices come back."""
        if config.workers < 1:
            raise ValueError(f"pool.workers: must be at least 1, got {config.workers}")
        if config.placement not in PLACEMENTS:
            raise ValueError(
                f"pool.placement: unknown strategy {config.placement!r}; expected one of {PLACEMENTS}"
            )
        for name, value in config.env.items():
            if not isinstance(name, str) or not name or "=" in name or not isinstance(value, str):
                raise ValueError(f"pool.env: {name}={value!r}; expected variable names mapped to strings")
        if THRESHOLD_ENV in config.env:
            try:
                parse_threshold(config.env[THRESHOLD_ENV])
            except ValueError as err:
                raise ValueError(f"pool.env: {err}") from None
        for name, amount in config.resources.items():
            if name in ("CPU", "GPU") or not isinstance(amount, (int, float)) or amount <= 0:
                raise ValueError(
                    f"pool.resources: {name}={amount!r}; expected a custom resource name and a positive amount "
                    "(CPU and GPU come from pool.device)"
                )
        self.config = config
        resources = ray.cluster_resources()
        kind = resolve_device_kind(config.device, resources.get("GPU", 0), config.workers)
        self.slot = device_slot(kind)
        self.bundle = {**self.slot.ray_resources, **config.resources}
        for name, amount in self.bundle.items():
            need = amount * config.workers
            if resources.get(name, 0) < need:
                raise PoolError(
                    f"pool.workers: {config.workers} {kind} workers of pool {config.name!r} need {need:g} "
                    f"{name} but the Ray cluster has {resources.get(name, 0):g}"
                )
        if placement_name:
            remove_stale_placement_group(placement_name)
        self.placement_group = placement_group(
            [dict(self.bundle)] * config.workers, strategy=config.placement, name=placement_name
        )
        try:
            ray.get(self.placement_group.ready(), timeout=config.ready_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            remove_placement_group(self.placement_group)
            raise PoolError(
                f"pool: placement group of {config.workers} x {self.bundle} "
                f"({config.placement}) was not placed within {config.ready_timeout_s:g} s"
            ) from err
        self.workers = [self._start_worker(i) for i in range(config.workers)]
        self.infos = ray.get([w.info.remote() for w in self.workers], timeout=config.ready_timeout_s)

    def _start_worker(self, index: int):
        env = worker_env(self.slot.kind, self.config.env)
        return (
            ray.remote(Worker)
            .options(
                num_cpus=self.slot.ray_resources.get("CPU", 0),
                num_gpus=self.slot.ray_resources.get("GPU", 0),
                resources=dict(self.config.resources),
                runtime_env={"env_vars": env} if env else None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement_group, placement_group_bundle_index=index
                ),
            )
            .remote(index, self.slot)
        )

    def unhealthy_workers(self, indices: list[int], timeout_s: float = 10.0) -> list[int]:
        """Which of these workers are dead or do not answer within `timeout_s`."""
        bad = []
        for i in indices:
            try:
                ray.get(self.workers[i].info.remote(), timeout=timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                bad.append(i)
        return bad

    def restart_workers(self, indices: list[int]) -> None:
        """Replace these workers with fresh ones in the same placement group bundles.

        Used after a worker died mid-job: its peers may be stuck in a collective with it, so the
        whole group is replaced rather than waiting for their timeouts.
        """
        for i in indices:
            ray.kill(self.workers[i], no_restart=True)
        for i in indices:
            self.workers[i] = self._start_worker(i)
        fresh = ray.get([self.workers[i].info.remote() for i in indices], timeout=self.config.ready_timeout_s)
        for i, info in zip(indices, fresh):
            self.infos[i] = info

    @property
    def size(self) -> int:
        return len(self.workers)

    def group(self, indices: list[int] | None = None) -> JobGroup:
        """A fresh process group over the given workers (all of them by default)."""
        chosen = [self.workers[i] for i in (indices if indices is not None else range(self.size))]
        return JobGroup(chosen, self.slot.backend, timeout_s=self.config.group_timeout_s)

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        remove_placement_group(self.placement_group)

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
