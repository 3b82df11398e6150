"""The test launcher's own robustness: a port taken between choosing it and rank 0 listening on it (other tests and
Ray start servers all the time) is retried on a fresh one instead of failing the test."""

from __future__ import annotations

import socket

import _parallel_dist


def rank_plus_world(rank: int, world: int) -> int:
    return rank + world


def test_a_taken_port_is_retried(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        chosen = [held.getsockname()[1]]  # the first port handed out is one another process listens on
        real = _parallel_dist.free_port
        monkeypatch.setattr(_parallel_dist, "free_port", lambda: chosen.pop() if chosen else real())
        assert _parallel_dist.run_ranks(rank_plus_world, 2, timeout=60) == [2, 3]
        assert not chosen  # the held port was tried first
