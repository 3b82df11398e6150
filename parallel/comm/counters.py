"""Bytes a worker sent, counted by kind of traffic and by peer."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

KINDS = ("halo", "kv", "norm", "linear", "cfg", "meta")
"""Kinds of traffic: conv halos, self-attention K/V (or inputs), GroupNorm sums, linear attention's summed
states, CFG noise, shapes."""


@dataclass
class BytesSent:
    """Bytes this worker sent, by kind then by peer global rank."""

    total: dict[str, dict[int, int]] = field(default_factory=dict)
    """Cumulative since the ``Comm`` was created."""
    last_step: dict[str, dict[int, int]] = field(default_factory=dict)
    """Since the last ``begin_step()``: the forward in progress, or the last finished one."""

    def per_peer(self, kinds: tuple[str, ...] | None = None, last_step: bool = False) -> dict[int, int]:
        """Bytes per peer summed over ``kinds`` (all kinds when None)."""
        src = self.last_step if last_step else self.total
        out: dict[int, int] = defaultdict(int)
        for kind, peers in src.items():
            if kinds is None or kind in kinds:
                for peer, n in peers.items():
                    out[peer] += n
        return dict(out)


def summed(books: list[dict[str, dict[int, int]]]) -> dict[str, dict[int, int]]:
    """Several counters' bytes by kind and peer, added up (one per model a plan split: Wan 2.2's experts)."""
    out: dict[str, dict[int, int]] = {}
    for book in books:
        for kind, peers in book.items():
            for peer, n in peers.items():
                out.setdefault(kind, {})[peer] = out.get(kind, {}).get(peer, 0) + n
    return out
