"""runtime.heap on this glibc: the fixed mmap threshold at worker start and the per-block malloc_trim, each
doing nothing on another device or when switched off; a trim gives a fragmented heap's free pages back (the resident
set was high before it and drops after); a fixed threshold maps the blocks over it on their own."""

from __future__ import annotations

import ctypes

import pytest
import torch

from runtime import heap, memory

MIB = 2**20

pytestmark = pytest.mark.skipif(not heap.glibc_available(), reason="the C library is not glibc")


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def test_trim_on_cpu_only_unless_switched_off(monkeypatch):
    monkeypatch.delenv(heap.TRIM_ENV, raising=False)
    assert heap.trim_heap("cpu") is True
    assert heap.trim_heap(torch.device("cpu")) is True
    assert heap.trim_heap("cuda:0") is False  # no CUDA needed: nothing is called for it
    assert heap.trim_heap(torch.device("meta")) is False
    monkeypatch.setenv(heap.TRIM_ENV, "0")
    assert heap.trim_heap("cpu") is False


def test_threshold_settings(monkeypatch):
    monkeypatch.delenv(heap.GLIBC_THRESHOLD_ENV, raising=False)
    monkeypatch.delenv(heap.THRESHOLD_ENV, raising=False)
    assert heap.fix_mmap_threshold("cuda:0") is None
    assert heap.fix_mmap_threshold("cpu") == 8 * MIB
    monkeypatch.setenv(heap.THRESHOLD_ENV, "0")
    assert heap.fix_mmap_threshold("cpu") is None
    monkeypatch.setenv(heap.THRESHOLD_ENV, str(4 * MIB))
    assert heap.fix_mmap_threshold("cpu") == 4 * MIB
    monkeypatch.setenv(heap.GLIBC_THRESHOLD_ENV, "131072")  # glibc's own setting wins: left alone
    assert heap.fix_mmap_threshold("cpu") is None
    for bad in ("8M", "-1", str(33 * MIB)):
        with pytest.raises(ValueError, match=heap.THRESHOLD_ENV):
            heap.parse_threshold(bad)


def test_trim_returns_a_fragmented_heaps_free_pages(monkeypatch):
    """128 MiB in 64 KiB buffers (under glibc's smallest mmap threshold, so on the heap); every other one freed
    leaves 64 MiB of holes between live buffers, which free() cannot give back (it only trims the heap's top) and
    malloc_trim(0) does."""
    monkeypatch.delenv(heap.TRIM_ENV, raising=False)
    libc = _libc()
    size, count = 64 * 1024, 2048
    freed = count // 2 * size
    heap.trim_heap("cpu")
    base = memory.current_bytes("cpu")
    buffers = []
    try:
        for _ in range(count):
            buffers.append(libc.malloc(size))
            ctypes.memset(buffers[-1], 1, size)  # resident
        for buffer in buffers[::2]:
            libc.free(buffer)
        buffers = buffers[1::2]
        fragmented = memory.current_bytes("cpu")
        assert fragmented - base > 0.8 * count * size  # the freed holes are still resident: not vacuous
        assert heap.trim_heap("cpu") is True
        trimmed = memory.current_bytes("cpu")
        assert fragmented - trimmed > 0.8 * freed, (base // MIB, fragmented // MIB, trimmed // MIB)
    finally:
        for buffer in buffers:
            libc.free(buffer)


def test_blocks_over_the_fixed_threshold_are_given_back_when_freed(monkeypatch):
    """6 MiB blocks, every other one freed between two live ones: under a fixed 4 MiB threshold they were mapped on
    their own, so freeing returns their pages at once; at glibc's dynamic threshold raised to its 32 MiB maximum they
    stay in the heap as resident holes (the same pattern measured both ways: the drop is the threshold's doing)."""
    monkeypatch.delenv(heap.GLIBC_THRESHOLD_ENV, raising=False)
    libc = _libc()
    size, count = 6 * MIB, 16
    freed = count // 2 * size

    def dropped_on_free() -> int:
        blocks = []
        try:
            for _ in range(count):
                blocks.append(libc.malloc(size))
                ctypes.memset(blocks[-1], 1, size)
            before = memory.current_bytes("cpu")
            for block in blocks[::2]:
                libc.free(block)
            blocks = blocks[1::2]
            return before - memory.current_bytes("cpu")
        finally:
            for block in blocks:
                libc.free(block)
            libc.malloc_trim(0)

    try:
        libc.mallopt(heap.M_MMAP_THRESHOLD, heap.MAX_MMAP_THRESHOLD)  # the dynamic threshold's ceiling
        assert dropped_on_free() < 0.2 * freed  # resident holes: not vacuous
        monkeypatch.setenv(heap.THRESHOLD_ENV, str(4 * MIB))
        assert heap.fix_mmap_threshold("cpu") == 4 * MIB
        assert dropped_on_free() > 0.8 * freed
    finally:
        libc.mallopt(heap.M_MMAP_THRESHOLD, heap.MAX_MMAP_THRESHOLD)  # fixed, as glibc's dynamic one ends up
