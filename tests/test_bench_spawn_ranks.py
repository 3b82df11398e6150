"""bench.common.spawn_ranks: every rank's result, and a rank that dies stops the wait at once (it waited 30 min on a
queue no one would fill, and its peers in the gloo group with it)."""

from __future__ import annotations

import time

import pytest

from bench.common import spawn_ranks


def _answer(rank: int, world: int, port: int, queue) -> None:
    queue.put((rank, world))


def _second_dies(rank: int, world: int, port: int, queue) -> None:
    if rank == 1:
        raise SystemExit(3)
    time.sleep(600)  # as a peer left waiting in its group would


def test_every_rank_answers():
    assert spawn_ranks(_answer, 2) == [(0, 2), (1, 2)]


def test_a_dead_rank_ends_the_wait():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 3"):
        spawn_ranks(_second_dies, 2)
    assert time.monotonic() - started < 60
