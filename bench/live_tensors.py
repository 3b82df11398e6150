"""Exact bytes of live tensors on the CPU, followed op by op: an allocator-independent peak.

A TorchDispatchMode sees every tensor an aten op returns; each distinct storage is counted until it is freed
(a weak reference to it expires). The peak is the most bytes alive after any op, with the largest tensors
alive then. Storages that existed before the mode began (the weights) are not counted; scratch buffers an op
allocates and frees inside itself (a convolution's workspace) are invisible here and show in resident memory.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorPeak(TorchDispatchMode):
    """Use as ``with LiveTensorPeak() as live: ...``; then ``live.peak_bytes`` and ``live.largest_at_peak``."""

    def __init__(self, keep: int = 8) -> None:
        super().__init__()
        self.keep = keep
        self.peak_bytes = 0
        self.largest_at_peak: list[tuple[int, str]] = []
        """(bytes, "op shape") of the largest tensors alive at the peak."""
        self._live: dict[int, tuple[StorageWeakRef, int, str]] = {}
        self._bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for ptr in [p for p, (ref, _, _) in self._live.items() if ref.expired()]:
            self._bytes -= self._live.pop(ptr)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
                if ptr and ptr not in self._live and t._base is None:
                    self._live[ptr] = (StorageWeakRef(storage), storage.nbytes(), f"{func} {tuple(t.shape)}")
                    self._bytes += storage.nbytes()
        if self._bytes > self.peak_bytes:
            self.peak_bytes = self._bytes
            self.largest_at_peak = sorted(((n, what) for _, n, what in self._live.values()), reverse=True)[
                : self.keep
            ]
        return out
