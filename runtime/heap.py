"""Keep a CPU worker's resident memory flat over a long video under glibc's malloc: a fixed 8 MiB mmap threshold at
worker start, and ``malloc_trim(0)`` after each finished block.

Why: a long video is rendered with a bounded set of live tensors, yet under glibc's default malloc a CPU
worker's resident set grew with the video's length. glibc's dynamic mmap threshold rises to the size of each
mapped block freed (up to 32 MiB), after which the VAE decode's and the MP4 encode's large temporaries come from
the heap (the brk heap and the threads' arenas) instead of their own mappings, and the holes they leave stay
resident: the decoding stage's peak RSS grew by up to 47% from 64 to 1,024 frames on the tiny CogVideoX 1.0
(BENCHMARKS.md, "video-memory"). Measured there, family by family:

- ``fix_mmap_threshold``, at worker start: ``mallopt(M_MMAP_THRESHOLD, 8 MiB)``. Blocks of 8 MiB and more are
  mapped on their own and unmapped when freed; the threshold stays fixed (setting it turns the dynamic one off),
  so everything smaller keeps the heap's fast path. Alone it kept every family but one flat (16 MiB did not;
  ``MALLOC_MMAP_THRESHOLD_=131072``, every tensor over 128 KiB mapped, does, but cost about 40% speed on CPU).
- ``trim_heap``, after each finished block on each stage that decodes or writes it: ``malloc_trim(0)`` hands the
  free pages of every arena back (``madvise(MADV_DONTNEED)``). With the threshold it catches what the threshold
  leaves (the tiny CogVideoX 1.5's small decode temporaries: 12% growth without it, 0.3% with it) at 0.5-5 ms a
  call; alone, under the dynamic threshold, it cost 12-23 ms a call and left CogVideoX 1.0 at 14%. Together they kept
  every family within 5% from 64 to 1,024 frames; their price is page faults on the decoding stage (pages mapped
  afresh, or given back and touched again), counted in each job's report (``minor_faults``).

- ``worker_env``, when a pool starts its CPU workers: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` in their environment
  (glibc reads its tunables once, at process start; 2.35 and later): malloc asks for transparent huge pages for its
  heap and its mapped chunks, so the decode's temporaries mapped afresh each block fault in 2 MiB at a time instead
  of 4 KiB. Where the kernel gives no huge pages (``transparent_hugepage`` set to ``never``) it changes nothing.

What flat memory costs on CPU (BENCHMARKS.md, "Malloc's huge pages on CPU workers" and "The workers' allocator and
the frame pipeline's speed"), mostly in the VAE decode: without the huge pages 14-23% of a video render's frames/s
against glibc's defaults (one worker decoding whole blocks lost more than stages decoding shares of them); with them,
in a 128-frame A/B (4 alternated rounds), one worker 13.52 frames/s and two stages 23.90 against glibc's 15.01 and
24.39 (11.74 and 21.01 without them), every family still within 6.3% from 64 to 1,024 frames. 16 MiB with the trim
(no huge pages) was a middle ground (-8% one worker, -15% two stages; the five families that grew most under glibc
within 7.6%). A pool that prefers speed to flat memory sets the variables below in ``pool.env``.

``TESSERA_MMAP_THRESHOLD`` (bytes) in a worker's environment (``pool.env``) sets another threshold, ``0`` leaves
glibc's dynamic one; a ``MALLOC_MMAP_THRESHOLD_`` there is glibc's own setting and is left alone.
``TESSERA_HEAP_TRIM=0`` turns the trim off; a ``GLIBC_TUNABLES`` there or in the driver's environment (empty: none)
replaces the huge-page one. Only on CPU devices (a GPU's memory is the caching allocator's), only
where the C library is glibc; a no-op elsewhere (musl, macOS).
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

TRIM_ENV = "TESSERA_HEAP_TRIM"
""""0" turns the per-block ``malloc_trim`` off; unset or anything else leaves it on."""
THRESHOLD_ENV = "TESSERA_MMAP_THRESHOLD"
"""The fixed mmap threshold in bytes set at worker start; "0" leaves glibc's dynamic threshold."""
GLIBC_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
"""glibc's own setting of the threshold, read when malloc starts: when present, the worker leaves it."""
MMAP_THRESHOLD = 8 * 2**20
"""The default fixed threshold: 8 MiB (glibc's dynamic one rises to up to 32 MiB)."""
MAX_MMAP_THRESHOLD = 32 * 2**20
"""The largest threshold glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``)."""
TUNABLES_ENV = "GLIBC_TUNABLES"
"""glibc's tunables, read once at process start."""
HUGE_PAGES = "glibc.malloc.hugetlb=1"
"""malloc's transparent huge pages (``madvise``) for its heap and mapped chunks."""
M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the mmap threshold (glibc's malloc.h)."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc with ``malloc_trim`` and ``mallopt``, else None."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has: its C library among them
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "malloc_trim", "mallopt")):
        return None  # not glibc
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


def glibc_available() -> bool:
    """Whether this process's C library is glibc with ``malloc_trim`` and ``mallopt``."""
    return _glibc() is not None


def _on_cpu_glibc(device: str | torch.device) -> ctypes.CDLL | None:
    return _glibc() if torch.device(device).type == "cpu" else None


def parse_threshold(raw: str | None) -> int:
    """A ``TESSERA_MMAP_THRESHOLD`` value in bytes (unset or empty: 8 MiB; 0: glibc's dynamic threshold kept)."""
    raw = (raw or "").strip()
    try:
        threshold = int(raw) if raw else MMAP_THRESHOLD
    except ValueError:
        threshold = -1
    if not 0 <= threshold <= MAX_MMAP_THRESHOLD:
        raise ValueError(
            f"{THRESHOLD_ENV}={raw!r}: expected bytes from 0 (glibc's dynamic threshold) to {MAX_MMAP_THRESHOLD} "
            "(glibc's largest)"
        )
    return threshold


def fix_mmap_threshold(device: str | torch.device) -> int | None:
    """Set glibc's mmap threshold for a CPU worker (``TESSERA_MMAP_THRESHOLD``, default 8 MiB); the threshold set,
    or None where nothing was set (a non-CPU device, no glibc, ``0``, or ``MALLOC_MMAP_THRESHOLD_`` given)."""
    libc = _on_cpu_glibc(device)
    if libc is None or GLIBC_THRESHOLD_ENV in os.environ:
        return None
    threshold = parse_threshold(os.environ.get(THRESHOLD_ENV))
    if threshold == 0 or libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return None
    return threshold


def trim_heap(device: str | torch.device) -> bool:
    """Return the heap's free pages to the OS on a CPU ``device`` unless ``TESSERA_HEAP_TRIM=0``; whether
    ``malloc_trim`` was called."""
    libc = _on_cpu_glibc(device)
    if libc is None or os.environ.get(TRIM_ENV, "1") == "0":
        return False
    libc.malloc_trim(0)
    return True


def worker_env(device_kind: str, env: dict[str, str]) -> dict[str, str]:
    """The environment a pool starts its workers with: ``env`` (``pool.env``), and on CPU workers glibc's tunable
    for transparent huge pages, unless ``env`` or the driver's environment (which a local cluster's workers
    inherit) sets ``GLIBC_TUNABLES`` itself (an empty value: none)."""
    if device_kind != "cpu" or TUNABLES_ENV in env or TUNABLES_ENV in os.environ:
        return dict(env)
    return {**env, TUNABLES_ENV: HUGE_PAGES}
