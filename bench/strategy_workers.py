"""Persistent gloo worker processes for the strategy benchmarks, and the timed denoising loop they share.

A strategy benchmark compares parallel configurations of one model on the same workers, run in alternating
rounds (``bench.common.alternate``). Building the models and forming the group once, then feeding the workers
commands, keeps start-up out of the timings and lets rounds alternate cheaply:

- ``WorkerPool(world, setup, args)`` spawns ``world`` processes of one torch thread each (the CPU analogue of
  one GPU) over a gloo group on loopback. Each calls ``setup(rank, world, *args)`` once; it builds that
  worker's models (and any sub-groups, which are collective) and returns its runs by name and a note for the
  report. ``pool.run(name)`` then has every worker run that loop after a barrier; each figure is the
  slowest rank's (all-reduce MAX), and rank 0's output comes back with it.
- ``timed_loop`` is a flow-matching (or any diffusers scheduler's) denoising loop timed per step, with the
  bytes sent during each step read from the strategy's counters.

``setup`` must be a module-level function (spawn pickles it by name).
"""

from __future__ import annotations

import os
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from parallel.comm import BytesSent


@dataclass
class Timed:
    """What one run of a loop reports."""

    figures: dict[str, float]
    """Named figures (seconds per step, bytes per step, ...); from a worker pool, each is the slowest rank's
    (the maximum over ranks): the group is as fast as its slowest worker."""
    output: torch.Tensor | None
    """The loop's final (gathered) latent, rank 0's; None when the run has nothing to compare."""


Run = Callable[[], Timed]
"""One timed loop on this worker, identical in its collectives on every rank."""
Setup = Callable[..., tuple[dict[str, Run], str]]
"""``setup(rank, world, *args) -> (runs by name, a note for the report)``, called once per worker."""


# ---- the timed loop ------------------------------------------------------------------------------------
@dataclass
class LoopTimes:
    """Seconds and bytes of each step of one denoising loop."""

    seconds: list[float]
    """Wall seconds of each step (the noise prediction and the scheduler step)."""
    sent: list[int]
    """Bytes this worker sent during each step, as its counters count them."""

    def mean_seconds(self, first: int = 0) -> float:
        """Seconds per step over steps ``first`` onward."""
        return sum(self.seconds[first:]) / len(self.seconds[first:])

    def mean_sent(self, first: int = 0) -> float:
        """Bytes per step over steps ``first`` onward."""
        return sum(self.sent[first:]) / len(self.sent[first:])


def bytes_total(counters: Sequence[Callable[[], BytesSent]]) -> int:
    """All bytes the counters have counted so far, every kind and peer."""
    return sum(n for counter in counters for peers in counter().total.values() for n in peers.values())


def timed_loop(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latent: torch.Tensor,
    scheduler: Any,
    counters: Sequence[Callable[[], BytesSent]] = (),
) -> tuple[torch.Tensor, LoopTimes]:
    """Step ``latent`` through ``scheduler.timesteps`` (set by the caller) with ``predict(latent, t) -> noise``.

    Returns the final latent and each step's seconds and bytes sent (``counters``: the strategy's
    ``BytesSent`` readers, cumulative)."""
    times = LoopTimes([], [])
    with torch.no_grad():
        for t in scheduler.timesteps:
            before = bytes_total(counters)
            started = time.perf_counter()
            noise = predict(latent, t)
            latent = scheduler.step(noise, t, latent, return_dict=False)[0]
            times.seconds.append(time.perf_counter() - started)
            times.sent.append(bytes_total(counters) - before)
    return latent, times


# ---- worker processes ----------------------------------------------------------------------------------
def _serve(rank: int, world: int, port: int, setup: Setup, args: tuple, commands: Any, results: Any) -> None:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        runs, note = setup(rank, world, *args)
        results.put(("ready", rank, note))
        while True:
            name = commands.get()
            if name == "stop":
                break
            dist.barrier()
            timed = runs[name]()
            keys = sorted(timed.figures)
            slowest = torch.tensor([float(timed.figures[k]) for k in keys], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            if rank == 0:
                results.put(("done", name, Timed(dict(zip(keys, slowest.tolist())), timed.output)))
    except BaseException:  # noqa: BLE001 - report anything to the parent
        results.put(("error", rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class WorkerPool:
    """``world`` persistent worker processes in one gloo group, each holding what ``setup`` built."""

    def __init__(self, world: int, setup: Setup, args: tuple = (), timeout: float = 1800.0):
        ctx = mp.get_context("spawn")
        self.timeout = timeout
        """Seconds to wait for one answer (a set-up or a run) before giving up."""
        self.results = ctx.Queue()
        self.failed = False
        """Whether a worker has raised: the others may be stuck in a collective waiting for it."""
        self.commands = [ctx.Queue() for _ in range(world)]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.procs = [
            ctx.Process(
                target=_serve, args=(r, world, port, setup, args, self.commands[r], self.results), daemon=True
            )
            for r in range(world)
        ]
        for p in self.procs:
            p.start()
        try:
            notes = dict((msg[1], msg[2]) for msg in (self._get() for _ in self.procs))
        except BaseException:
            self.close()
            raise
        self.note: str = notes[0]
        """Rank 0's set-up note."""

    def _get(self) -> tuple:
        try:
            msg = self.results.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from the workers after {self.timeout}s") from None
        if msg[0] == "error":
            self.failed = True
            raise RuntimeError(f"worker {msg[1]} failed:\n{msg[2]}")
        return msg

    def run(self, name: str) -> Timed:
        """Every worker runs ``name`` once; the slowest rank's figures and rank 0's output."""
        for q in self.commands:
            q.put(name)
        return self._get()[2]

    def close(self) -> None:
        """Stop the workers; those that do not stop (stuck in a collective with a failed one) are killed."""
        for q in self.commands:
            q.put("stop")
        for p in self.procs:
            p.join(timeout=2 if self.failed else 30)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
