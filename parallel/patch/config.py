"""Configuration of patch (row-band) parallelism."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("sync", "displaced")
KV_SOURCES = ("kv", "input")
STALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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

    release_lag: int = 4
    """Displaced mode: this worker frees its copy of what an exchange sent (its own K/V, halos) this many
    exchanges later, waiting for the peer to have taken it, instead of holding it until the next step.
    Smaller saves memory (up to one step's K/V per worker), larger waits less often on a slow peer."""

    stale_dtype: str | None = None
    """Displaced mode: "float16" or "bfloat16" sends the activations of displaced steps (halos, K/V) in
    that precision, and keeps them so until the next step uses them: half the bytes on the wire and half
    the memory held between steps, for a rounding error far below the staleness. None: the model's dtype.
    Synchronous steps (the warmup included) always exchange in the model's dtype and stay exact."""

    kv_source: str = "kv"
    """What self-attention exchanges so that every band sees every token's keys and values. "kv": each band
    projects its own tokens and sends K and V (2 x the attention width per token). "input": each band sends the
    attention's input (its channels per token, half as many bytes when the width equals the channels) and every
    band projects all bands' K and V itself: half the bytes on the wire and half the stale K/V held between
    displaced steps, for the K/V projection of the other bands' tokens on every worker (cheap while a band holds
    many more tokens than the layer has channels). The UNet and PixArt-style models; Wan refuses it."""

    @property
    def stale_torch_dtype(self) -> torch.dtype | None:
        """``stale_dtype`` as a torch dtype (None: the model's)."""
        return None if self.stale_dtype is None else STALE_DTYPES[self.stale_dtype]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PatchConfig.mode must be one of {MODES}, got mode={self.mode!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(
                f"PatchConfig.warmup_steps must be an int >= 0, got warmup_steps={self.warmup_steps!r}"
            )
        if not isinstance(self.release_lag, int) or self.release_lag < 1:
            raise ValueError(
                f"PatchConfig.release_lag must be an int >= 1, got release_lag={self.release_lag!r}"
            )
        if self.kv_source not in KV_SOURCES:
            raise ValueError(f"PatchConfig.kv_source must be one of {KV_SOURCES}, got kv_source={self.kv_source!r}")
        if self.stale_dtype is not None and self.stale_dtype not in STALE_DTYPES:
            raise ValueError(
                f"PatchConfig.stale_dtype must be None or one of {sorted(STALE_DTYPES)}, "
                f"got stale_dtype={self.stale_dtype!r}"
            )
