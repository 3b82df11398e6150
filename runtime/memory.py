"""Peak memory of the worker process: max allocated on CUDA, peak RSS on CPU.

On Linux the peak RSS (VmHWM) can be reset by writing 5 to /proc/self/clear_refs, so each job
reports its own peak rather than the worker's lifetime peak.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not permitted: the lifetime peak is reported instead


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM...) in bytes, None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_bytes(device: str) -> int:
    """Memory in use now: allocated on CUDA, resident set on CPU."""
    if device.startswith("cuda"):
        return int(torch.cuda.memory_allocated())
    return _status_bytes("VmRSS") or 0


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def minor_faults() -> int:
    """Minor page faults of this process so far: pages first touched (a fresh mapping, or heap pages given back and
    touched again). Unlike time, a count other load does not move: the allocator's share of a render's cost."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
