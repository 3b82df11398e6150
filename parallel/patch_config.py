"""Configuration of patch (row-band) parallelism."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("sync", "displaced")


@dataclass
class PatchConfig:
    """How a patch-parallel model exchanges activations between bands."""

    mode: str = "sync"
    """"sync": halos, K/V and GroupNorm statistics are exchanged fresh in every forward (exact, equals
    one device). "displaced" (DistriFusion): after the warmup, every layer uses the previous forward's
    values from the other bands, sent asynchronously so the transfer overlaps compute (approximate)."""

    warmup_steps: int = 1
    """Number of forward calls (denoising steps) run synchronously before displaced mode starts.
    The first forward after creation or ``reset()`` is always synchronous, whatever this says,
    because there is nothing stale to use yet. Ignored in "sync" mode."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PatchConfig.mode must be one of {MODES}, got mode={self.mode!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(
                f"PatchConfig.warmup_steps must be an int >= 0, got warmup_steps={self.warmup_steps!r}"
            )
