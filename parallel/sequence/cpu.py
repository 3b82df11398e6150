"""What diffusers 0.42's context parallelism needs on a CPU-only torch: the one place we work around it.

1. ``ModelMixin._resolve_parallel_config`` picks a device as ``rank % torch.accelerator.device_count()``;
   on a CPU-only torch there is no accelerator, the count is 0, and ``enable_parallelism`` dies with
   ``ZeroDivisionError``. The device it computes is only recorded on the config (we hand diffusers the
   mesh, so nothing is placed by it): for that one call the count reads 1, which makes it ``cpu:0``.
2. Ring attention merges partial attentions by their log-sum-exp, which diffusers asks of its attention
   backend; the "native" backend (SDPA) returns none, and ``_native_flash`` calls
   ``aten::_scaled_dot_product_flash_attention``, which torch ships without a CPU kernel (it has
   ``_scaled_dot_product_flash_attention_for_cpu`` instead). ``register_cpu_flash_attention`` fills that
   gap once per process with torch's own CPU kernel; it never replaces a kernel torch has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_cpu_flash_library: torch.library.Library | None = None
"""Keeps the CPU kernel registered (a ``Library`` unregisters its kernels when it is collected)."""


@contextlib.contextmanager
def accelerator_count_for_diffusers() -> Iterator[str | None]:
    """Around ``enable_parallelism``: on a torch without accelerators, ``torch.accelerator.device_count()``
    reads 1 (see 1. above). Yields a note on what was done, None when nothing was needed."""
    real = torch.accelerator.device_count
    if real() != 0:
        yield None
        return
    torch.accelerator.device_count = lambda: 1
    try:
        yield (
            "torch.accelerator.device_count() is 0 on this CPU-only torch (diffusers divides by it while "
            "picking a device): it read 1 during enable_parallelism"
        )
    finally:
        torch.accelerator.device_count = real


def _flash_attention_cpu(
    query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None
):
    """``aten::_scaled_dot_product_flash_attention`` on CPU, by torch's CPU flash kernel; the outputs only a
    CUDA kernel has (sequence offsets, RNG state, debug mask) are empty."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, scale=scale
    )
    empty = query.new_empty(0)
    return out, lse, empty, empty, query.shape[2], key.shape[2], empty, empty, empty


def register_cpu_flash_attention() -> str | None:
    """Give ``aten::_scaled_dot_product_flash_attention`` a CPU kernel (see 2. above), once per process.
    Returns a note when ours is the CPU kernel in use, None when torch has its own."""
    global _cpu_flash_library
    op = "aten::_scaled_dot_product_flash_attention"
    if _cpu_flash_library is None:
        if torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"):
            return None
        library = torch.library.Library("aten", "IMPL")
        library.impl("_scaled_dot_product_flash_attention", _flash_attention_cpu, "CPU")
        _cpu_flash_library = library
    return (
        "ring attention needs log-sum-exp from its attention kernel: diffusers' _native_flash backend, with "
        f"torch's CPU flash kernel registered for {op}"
    )
