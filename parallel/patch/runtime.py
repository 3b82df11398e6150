"""Per-model state shared by the patched layers, and the handle returned to the caller.

One ``PatchRuntime`` lives per parallelized model. It counts forward calls (one per denoising
step), decides whether the current forward is synchronous, learns the band geometry from the first
input, and holds each layer's displaced-mode cache: the previous forward's values from the other
bands, possibly still in flight (a ``Pending``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from parallel.comm import BytesSent, Comm, Pending
from parallel.patch.bands import Bounds, bounds_from_heights, check_bounds
from parallel.patch.config import PatchConfig


class PatchRuntime:
    def __init__(self, comm: Comm, config: PatchConfig, align: int, min_rows: int | None = None):
        self.comm = comm
        self.config = config
        self.align = align
        self.min_rows = min_rows
        self.step = 0
        """Forward calls started since creation or the last reset (with its ``step`` offset)."""
        self.sync_now = True
        self.bounds: Bounds | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._primed = False
        self._cache: dict[Any, Any] = {}
        self._extra: dict[Any, Any] = {}
        self._sizes: dict[Any, list[int]] = {}
        self._sending: list[Pending] = []
        """Displaced exchanges posted most recently whose send buffers are still held, oldest first."""
        self._next_id = 0

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world(self) -> int:
        return self.comm.world

    @property
    def is_first(self) -> bool:
        return self.comm.rank == 0

    @property
    def is_last(self) -> bool:
        return self.comm.rank == self.comm.world - 1

    def new_layer_id(self) -> int:
        """Ids are handed out in module order, which is the same on every rank (used as p2p tags)."""
        self._next_id += 1
        return self._next_id

    # ---- per forward ------------------------------------------------------------------------
    def begin_forward(self, x: torch.Tensor) -> None:
        """Called before every model forward with the model's band input (B, C, rows, W)."""
        self.comm.begin_step()
        shape = tuple(x.shape)
        if self.bounds is None:
            rows = self.comm.all_gather_ints([x.shape[-2], x.shape[-1]], x.device)
            widths = sorted({w for _, w in rows})
            if len(widths) > 1:
                raise ValueError(f"all bands must have the same width, got widths {widths}")
            bounds = bounds_from_heights([h for h, _ in rows])
            check_bounds(bounds, self.align, self.min_rows)
            self.bounds = bounds
            self._input_shape = shape
        elif shape != self._input_shape:
            raise RuntimeError(
                f"band input shape changed from {self._input_shape} to {shape}; "
                "call handle.reset() on every rank before changing shapes"
            )
        displaced = self.config.mode == "displaced"
        self.sync_now = not (displaced and self._primed and self.step >= self.config.warmup_steps)
        self._primed = True
        self.step += 1

    def wire_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype activations of ``dtype`` travel in during the current forward: ``config.stale_dtype``
        in a displaced step when set, else ``dtype`` itself."""
        stale = self.config.stale_torch_dtype
        return dtype if self.sync_now or stale is None else stale

    def exchange(self, key: Any, post: Callable[[], Pending], activations: bool = False) -> Any:
        """Run one exchange of layer ``key``: fresh when synchronous, else last forward's result.

        ``post`` starts the exchange of this forward's values. Synchronous: wait and return its
        result (kept as next forward's stale value in displaced mode). Displaced: return the stale
        result of the previous forward (waiting on it if still in flight) and leave this forward's
        exchange in flight for the next one. ``activations``: the result is tensors (or ``None``s) that
        displaced steps send in ``config.stale_dtype``; a synchronous step then keeps its copy for the next
        step in that dtype too, so the cache is never held at full precision.
        """
        if self.sync_now:
            result = post().wait()
            if self.config.mode == "displaced":
                stale = self.config.stale_torch_dtype
                if activations and stale is not None:
                    result_kept = type(result)(None if t is None else t.to(stale) for t in result)
                else:
                    result_kept = result
                self._cache[key] = result_kept
            return result
        if key not in self._cache:
            raise RuntimeError(f"layer {key!r} has no value from the previous step; call handle.reset()")
        stale = self._cache[key]
        if isinstance(stale, Pending):
            stale = stale.wait()
        self._cache[key] = pending = post()
        self._release_old_sends(pending)
        return stale

    def _release_old_sends(self, pending: Pending) -> None:
        """Free this worker's copies of what it sent ``config.release_lag`` exchanges ago.

        A displaced exchange's sends would otherwise hold their buffers (this band's K/V of every
        attention layer) until the next step waits on it: gloo completes a send only when waited on. The
        peer posts the matching receive when it reaches the same layer, so waiting a few exchanges later
        rarely blocks, and the received part, which the next step needs, stays in flight.
        """
        self._sending.append(pending)
        while len(self._sending) > self.config.release_lag:
            self._sending.pop(0).release_sends()

    def remember(self, key: Any, value: Any) -> None:
        """Layer-private state dropped on reset (e.g. GroupNorm's previous local statistics)."""
        self._extra[key] = value

    def recall(self, key: Any) -> Any:
        return self._extra[key]

    def gathered_sizes(self, key: Any, local: int, device: torch.device) -> list[int]:
        """Every rank's size of an uneven tensor (e.g. token count), exchanged once per layer."""
        k = (key, local)
        if k not in self._sizes:
            self._sizes[k] = [v[0] for v in self.comm.all_gather_ints([local], device)]
        return self._sizes[k]

    def reset(self, step: int = 0) -> None:
        """Wait for in-flight exchanges, drop caches and geometry; the next forward is synchronous."""
        for v in self._cache.values():
            if isinstance(v, Pending):
                v.wait()
        self._cache.clear()
        self._sending.clear()
        self._extra.clear()
        self._sizes.clear()
        self.bounds = None
        self._input_shape = None
        self._primed = False
        self.step = step


class PatchHandle:
    """What ``parallelize_*_patch`` returns: counters, reset and undo for one parallelized model."""

    def __init__(self, model: torch.nn.Module, runtime: PatchRuntime, restore: list[Callable[[], None]]):
        self.model = model
        self._rt = runtime
        self._restore = restore

    @property
    def config(self) -> PatchConfig:
        return self._rt.config

    @property
    def comm(self) -> Comm:
        return self._rt.comm

    @property
    def bounds(self) -> Bounds | None:
        """Row bands of the latent, learned from the first forward's inputs (None before it)."""
        return self._rt.bounds

    @property
    def step(self) -> int:
        """Forward calls since creation or reset (plus the ``step`` given to ``reset``)."""
        return self._rt.step

    @property
    def last_forward_was_sync(self) -> bool:
        return self._rt.sync_now

    @property
    def sends_held(self) -> int:
        """Exchanges whose send buffers this worker still holds (at most ``config.release_lag`` in
        displaced steps; none once synchronous exchanges have been waited on)."""
        return sum(1 for v in self._rt._cache.values() if isinstance(v, Pending) and v.holds_sends)

    @property
    def bytes_sent(self) -> BytesSent:
        """Bytes sent by this worker per kind and peer global rank: ``total`` and ``last_step``."""
        return self._rt.comm.bytes_sent()

    def reset(self, step: int = 0) -> None:
        """Make the next forward synchronous and forget stale activations and band geometry.

        Collective: call on every rank of the group, e.g. at the end of a segment of steps or after
        a job moved to this group. ``step`` is the denoising step index the next forward runs, so a
        job resumed inside its warmup still finishes the warmup synchronously.
        """
        self._rt.reset(step)

    def remove(self) -> None:
        """Undo the patching (after draining in-flight exchanges); the model runs single-device again."""
        self._rt.reset()
        for undo in reversed(self._restore):
            undo()
        self._restore = []
