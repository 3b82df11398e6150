"""The frame pipeline's ring overlaps communication with compute, shown by event order, not durations.

Two real gloo processes (stage 0 and stage 1) run with the event log on (``FramePipeline(trace=True)``).
Each test fails if the ring is made synchronous: waiting on a send right after posting it breaks the
order in ``test_sends_and_receives_overlap_the_next_compute``; any synchronous send (``dist.send`` or
``isend().wait()``) deadlocks stage 0 in ``test_delayed_receiver_does_not_hold_back_the_sender``.
"""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _video_overlap import AHEAD, ORDERED, RUN_AHEAD_ITEMS, delayed_receiver, reference, traced_run

from parallel.frames.schedule import WorkItem
from parallel.frames.trace import FrameTrace


def _trace(events) -> FrameTrace:
    trace = FrameTrace()
    trace.events = list(events)
    return trace


def _assert_parity(latents: dict, config: dict) -> None:
    ref = reference(config)
    assert sorted(latents) == sorted(ref)
    for block, latent in ref.items():
        torch.testing.assert_close(latents[block], latent, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def traced():
    return run_ranks(traced_run, 2, timeout=180)


def test_sends_and_receives_overlap_the_next_compute(traced):
    stage0, stage1 = (_trace(r["events"]) for r in traced)
    items: list[WorkItem] = traced[0]["items"]
    n = len(items)
    for k in range(n):
        for trace, channel in ((stage0, "hidden"), (stage1, "output")):
            # item k is sent as soon as it is computed, and not waited on before item k+1 computes
            assert trace.position("compute_end", k) < trace.position(f"send:{channel}", k)
            if k + 1 < n:
                assert trace.position(f"send:{channel}", k) < trace.position("compute_start", k + 1)
                assert trace.position(f"send_wait:{channel}", k) > trace.position("compute_end", k + 1)
    # the sender does wait, but only on old sends (bounded memory): some waits happen mid-run
    assert stage0.position("send_wait:hidden", 0) < stage0.position("compute_start", n - 1)
    for k in range(1, n):
        # stage 1 posts the receive of message k before computing item k-1 and waits on it only after
        assert stage1.position("post:hidden", k) < stage1.position("compute_start", k - 1)
        assert stage1.position("wait:hidden", k) > stage1.position("compute_end", k - 1)
    for k in range(n - 1):
        # stage 0 posts the receive of item k's output before computing item k+1 ...
        assert stage0.position("post:output", k) < stage0.position("compute_start", k + 1)
    for k, item in enumerate(items):
        # ... and waits on it only when the block's next step is about to run
        nxt = WorkItem(item.tick + 1, item.block, item.step + 1)
        if nxt in items:
            d = items.index(nxt)
            assert (
                stage0.position("compute_end", d - 1)
                < stage0.position("wait:output", k)
                < stage0.position("compute_start", d)
            )
    _assert_parity(traced[0]["latents"], ORDERED)


def test_delayed_receiver_does_not_hold_back_the_sender(tmp_path):
    stage0, stage1 = run_ranks(delayed_receiver, 2, str(tmp_path / "flag"), timeout=180)
    ahead = _trace(stage0["ahead"])
    assert ahead.indices("compute_end") == list(range(RUN_AHEAD_ITEMS))
    assert ahead.indices("send:hidden") == list(range(RUN_AHEAD_ITEMS))
    assert ahead.indices("send_wait:hidden") == []  # nothing was waited on: the receiver had posted nothing
    assert stage1["ahead"] == []  # stage 1 really had not started
    _assert_parity(stage0["latents"], AHEAD)
