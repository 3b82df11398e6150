"""The strategy benchmarks' shared machinery (bench.strategy_workers): the timed loop's per-step figures, and the
persistent gloo worker pool's figures (the slowest rank's), outputs (rank 0's) and failures (named, not hung)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler

from bench.strategy_workers import Timed, WorkerPool, timed_loop
from parallel.comm import BytesSent


def test_timed_loop_reports_each_steps_seconds_and_bytes():
    sent = BytesSent()
    calls = []

    def predict(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t))
        # a strategy's counter growing by 10 bytes more each step, to two peers
        for peer in (1, 2):
            sent.total.setdefault("kv", {})[peer] = sent.total.get("kv", {}).get(peer, 0) + 5 * len(calls)
        return torch.ones_like(latent)

    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(3)
    latent = torch.zeros(1, 2, 4, 4)
    out, times = timed_loop(predict, latent, scheduler, [lambda: sent])

    assert calls == [float(t) for t in scheduler.timesteps]
    assert times.sent == [10, 20, 30]
    assert times.mean_sent(1) == 25
    assert len(times.seconds) == 3 and all(s >= 0 for s in times.seconds)
    # flow matching from sigma 1 to 0 with a constant velocity of 1: the latent moves by -1
    torch.testing.assert_close(out, torch.full_like(latent, -1.0))


# ---- the pool, with a trivial set-up (module level: spawn pickles it by name) ---------------------------------
def _setup(rank: int, world: int, label: str):
    def figures() -> Timed:
        total = torch.tensor([float(rank + 1)])
        dist.all_reduce(total)  # a collective, as every benchmark run makes
        return Timed({"rank": float(rank), "minus_rank": -float(rank)}, total * 10 + rank)

    def fail() -> Timed:
        if rank == 1:
            raise ValueError("rank 1 cannot run this")
        return Timed({"rank": float(rank)}, None)

    return {"figures": figures, "fail": fail}, f"{label} on rank {rank}"


def test_pool_reports_the_slowest_ranks_figures_then_names_a_failed_worker_without_hanging():
    """One pool (spawning two workers costs seconds): persistent runs report the slowest rank's figures and rank
    0's output; a run that fails on rank 1 names it, and closing kills rank 0 waiting in its all-reduce."""
    started = time.monotonic()
    pool = WorkerPool(2, _setup, ("set up",), timeout=120)
    try:
        assert pool.note == "set up on rank 0"
        for _ in range(2):  # the workers persist between runs
            timed = pool.run("figures")
            assert timed.figures == {"minus_rank": 0.0, "rank": 1.0}
            torch.testing.assert_close(timed.output, torch.tensor([30.0]))
        with pytest.raises(RuntimeError, match="(?s)worker 1 failed.*rank 1 cannot run this"):
            pool.run("fail")
    finally:
        pool.close()  # rank 0 waits in the figures' all-reduce for rank 1: killed, not waited for
    assert pool.failed
    assert not any(p.is_alive() for p in pool.procs)
    assert time.monotonic() - started < 90
