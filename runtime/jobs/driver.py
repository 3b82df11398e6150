"""One job on a group of pool workers, driven the same way whatever its kind.

A job is units (denoising steps, a video's queue ticks) over a checkpointable state. A kind's driver
(``runtime.jobs.image``, ``runtime.jobs.video``) says how its workers begin, advance, capture the state
and finish; ``drive`` runs the units of one segment over any driver: it keeps calls queued on the workers
so they never wait for the driver process, reports progress after every unit, takes checkpoints at exactly
their units, and stops at a unit boundary when asked (``JobStopped``: pause, cancel, a model switch).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import ray
from tqdm import tqdm

Refs = list
"""Ray object refs of one call queued on every worker of the group."""

UnitHook = Callable[[int], bool]
"""Called after every unit with the units done; returning False stops the job at a unit boundary."""

CheckpointSink = Callable[[dict], None]
"""Receives the job's state (what a checkpoint holds) to store."""


class JobStopped(Exception):
    """The unit hook asked the job to stop at a unit boundary (cancel, pause, the controller stopping).

    ``checkpoint`` is the state at that boundary, so the job can continue from it later."""

    def __init__(self, steps_done: int, checkpoint: dict) -> None:
        super().__init__(f"stopped after {steps_done} units")
        self.steps_done = steps_done
        """Units done (denoising steps, or a video's queue ticks)."""
        self.checkpoint = checkpoint


class JobDriver(Protocol):
    """How one job kind's workers are driven from the driver process (each call queues work on them)."""

    units_per_call: int
    """Units one ``advance`` call runs (a video may advance several ticks per round trip)."""
    queue_depth: int
    """Advance calls kept queued on the workers: 2 lets a worker start the next unit while the driver
    handles the last one's result; 1 waits for each."""

    def begin(self, resume: dict | None) -> Refs:
        """Queue every worker's set-up (from ``resume``, a checkpoint state, when given)."""

    def advance(self, units: int) -> Refs:
        """Queue ``units`` more units on every worker."""

    def units_done(self, refs: Refs) -> int:
        """Wait for an ``advance``: the units done after it."""

    def snapshot(self) -> Refs:
        """Queue the capture of every worker's share of the state (behind what is queued)."""

    def state(self, refs: Refs) -> dict:
        """Wait for a ``snapshot``: the job's state, merged from the workers' shares."""

    def after_last(self) -> None:
        """The last advance is queued: queue what follows it (results, decode, the end of the session)."""


class WorkerGroupDriver:
    """What every kind's driver does alike: the same call queued on every worker of its group."""

    def __init__(self, workers: list, spec: Any) -> None:
        self.workers = workers
        self.spec = spec

    def advance(self, units: int) -> Refs:
        return [w.advance.remote(units) for w in self.workers]

    def units_done(self, refs: Refs) -> int:
        return get_all(refs)[0]

    def snapshot(self) -> Refs:
        return [w.snapshot.remote() for w in self.workers]


def get_all(refs: list) -> list:
    """``ray.get(refs)``, but failing as soon as any call fails: when a worker dies, its peers wait in a
    collective until the group's timeout, and the caller should not wait with them."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    return ray.get(refs)


def drive(
    driver: JobDriver,
    first: int,
    until: int,
    resume: dict | None = None,
    progress: bool = False,
    on_unit: UnitHook | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointSink | None = None,
    unit: str = "step",
) -> tuple[list, list[float]]:
    """Units ``first``..``until`` of one job on ``driver``'s workers; returns (the workers' set-up results,
    the seconds between consecutive advance results).

    The first advances are queued behind the set-up calls without waiting for them. A stop asked for
    after unit k lands after the advances already queued (still a unit boundary); when that reaches
    ``until`` the segment simply completes. A checkpoint's snapshot is queued right behind the advance
    that crosses a multiple of ``checkpoint_every``, so it holds exactly that unit's state.
    """
    seconds: list[float] = []
    queued = first
    inflight: deque[Refs] = deque()
    snapshots: dict[int, Refs] = {}
    checkpoints = bool(checkpoint_every and on_checkpoint)

    def queue_advance() -> None:
        nonlocal queued
        before, queued = queued, min(until, queued + driver.units_per_call)
        inflight.append(driver.advance(queued - before))
        if checkpoints and before // checkpoint_every < queued // checkpoint_every and queued < until:
            snapshots[queued] = driver.snapshot()
        if queued == until:
            driver.after_last()

    begin_refs = driver.begin(resume)
    bar = tqdm(total=until, initial=first, desc="denoising", unit=unit, disable=not progress)
    for _ in range(driver.queue_depth):
        if queued < until:  # a segment one call covers gets one call: none queued past its end
            queue_advance()
    if first >= until:
        driver.after_last()
    begun = get_all(begin_refs)  # a failed set-up is reported as itself, not as the queued unit's failure
    last = time.perf_counter()

    def next_result() -> int:
        nonlocal last
        done = driver.units_done(inflight.popleft())
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
        bar.update(done - bar.n)
        return done

    try:
        while inflight:
            done = next_result()
            if done in snapshots:
                on_checkpoint(driver.state(snapshots.pop(done)))
            if on_unit is not None and not on_unit(done):
                if inflight:  # the advances already queued run; stop after them
                    while inflight:
                        done = next_result()
                        on_unit(done)
                    if done == until:  # nothing left to stop: the job (or segment) is complete
                        break
                raise JobStopped(done, driver.state(driver.snapshot()))
            if queued < until:
                queue_advance()
    finally:
        bar.close()
    return begun, seconds
