"""What sequence parallelism runs: diffusers' context parallelism, split between Ulysses and Ring."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SequenceConfig:
    """How one model's token sequence is split across the workers of one replica (``ulysses x ring``)."""

    ulysses: int = 1
    """Ulysses degree: workers that swap sequence shards for head shards (all-to-all) around each attention;
    the model's attention heads must divide by it."""
    ring: int = 1
    """Ring degree: workers that pass key/value shards around a ring, each attending its own queries to all."""

    def __post_init__(self) -> None:
        for name in ("ulysses", "ring"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.degree < 2:
            raise ValueError(f"ulysses x ring must be at least 2 workers, got {self.ulysses} x {self.ring}")

    @property
    def degree(self) -> int:
        """Workers one model's forward is spread over."""
        return self.ulysses * self.ring
