"""Per-worker activation memory of patch parallelism on the built-in model: one worker, sync and displaced.

    .venv/bin/python -m bench.patch_memory --size 1024 --workers 2 3

Measures `pipelines.families.sd.patch.parallelize_unet_patch` itself: one gloo process per worker (one torch thread each, no
Ray), the built-in UNet, CFG batch 2: a warm-up forward, then four denoising forwards (displaced after one
synchronous step; the warm-up's displaced state is dropped first, so the four rebuild it). Per worker, three
peaks (MB) and the ratio of the largest worker's to one worker's:

- **first forward**: the resident high-water mark of the warm-up forward above the resident memory after
  loading. It includes one-time costs that do not scale with the image (oneDNN's primitives and scratchpads,
  gloo's connections and buffers, lazily loaded code), so it overstates activation memory.
- **activations (RSS)**: the high-water mark of the four forwards above the resident memory after the
  warm-up (the kernel's mark is reset there, `/proc/self/clear_refs`): activations, transient workspaces
  inside ops, and what displaced mode keeps between steps.
- **live tensors**: the most bytes of tensors alive at once during the four forwards, followed op by op
  (`bench/live_tensors.py`); exact and allocator-independent, but blind to workspaces inside an op.

The last column is the bytes of tensors displaced mode keeps from one step to the next: the other bands' K/V received
(their attention inputs in the "inputs exchanged" rows, `parallel.kv_source=input`) and conv halos (in float16 in
the "float16 stale" rows, `parallel.stale_dtype`), GroupNorm statistics, and what the last few exchanges sent (a
worker frees its sent buffers `PatchConfig.release_lag` exchanges later).

Each configuration runs twice: with glibc's default allocator settings (what the pool's workers run), and
with `MALLOC_MMAP_THRESHOLD_` fixed at 128 KiB, so that every large tensor is its own mapping returned to the
kernel when freed and resident memory follows the live tensors rather than what the heap keeps.
Writes the "patch-memory" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

from bench.common import environment, provenance, spawn_ranks, write_section
from bench.live_tensors import LiveTensorPeak

FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}
FORWARDS = 4
PATCH_CONFIGS = {
    "sync": {"mode": "sync"},
    "displaced": {"mode": "displaced"},
    "displaced, float16 stale": {"mode": "displaced", "stale_dtype": "float16"},
    "displaced, inputs exchanged": {"mode": "displaced", "kv_source": "input"},
    "displaced, float16 stale, inputs exchanged": {"mode": "displaced", "stale_dtype": "float16", "kv_source": "input"},
}
"""Row label -> ``PatchConfig`` fields of each multi-worker configuration (warmup 1)."""


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _resident_bytes(obj, seen: set[int]) -> int:
    """Bytes of the distinct tensor storages reachable from a displaced-mode cache entry."""
    from parallel.comm import Pending

    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, (list, tuple)):
        return sum(_resident_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(_resident_bytes(o, seen) for o in obj.values())
    if isinstance(obj, Pending):
        if obj._done:
            return _resident_bytes(obj._result, seen)
        cells = obj._finish.__closure__ or ()
        return sum(_resident_bytes(c.cell_contents, seen) for c in cells if not callable(c.cell_contents))
    return 0


def _worker(rank: int, world: int, label: str, size: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from parallel import PatchConfig, band_bounds
    from pipelines.builtin import resolve_model
    from pipelines.families.sd.patch import parallelize_unet_patch, unet_alignment
    from pipelines.loading import load_pipeline

    unet = load_pipeline(resolve_model("builtin-image")).unet.eval()
    side = size // 8
    start, end = band_bounds(side, world, unet_alignment(unet))[rank]
    latent = torch.randn(2, unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    band = latent[:, :, start:end].contiguous()
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    handle = None
    if world > 1:
        config = PatchConfig(warmup_steps=1, **PATCH_CONFIGS[label])
        handle = parallelize_unet_patch(unet, dist.group.WORLD, config)
    _reset_high_water_mark()
    loaded = _status_mb("VmRSS")
    with torch.no_grad():
        unet(band, 950, encoder_hidden_states=text)  # warm-up: one-time allocations (oneDNN, gloo pairs)
    first = _status_mb("VmHWM") - loaded
    if handle is not None:
        handle.reset()  # drop what the warm-up left for a displaced step: the forwards below rebuild it
    _reset_high_water_mark()
    warm = _status_mb("VmRSS")
    kept = 0.0
    with torch.no_grad(), LiveTensorPeak() as live:
        for step in range(FORWARDS):
            unet(band, 900 - 100 * step, encoder_hidden_states=text)
            if handle is not None:
                kept = _resident_bytes(handle._rt._cache, set()) / 2**20
    queue.put((rank, end - start, first, _status_mb("VmHWM") - warm, live.peak_bytes / 2**20, kept))
    dist.barrier()
    dist.destroy_process_group()


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # VmHWM := the current RSS
        refs.write("5")


def measure(world: int, label: str, size: int, env: dict[str, str]) -> list[tuple[int, int, float, float, float, float]]:
    """(rank, latent rows, first-forward MB, activation MB (RSS), live-tensor MB, MB kept between steps) per
    worker, in rank order."""
    with environment(env):  # inherited by the spawned workers
        return spawn_ranks(_worker, world, label, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    args = parser.parse_args()
    configs = [(1, "sync")] + [(w, label) for w in args.workers for label in PATCH_CONFIGS]
    rows = []
    for allocator, env in (("glibc default", {}), ("mmap threshold 128 KiB", FIXED_MMAP)):
        one: list[float] = []
        for world, config in configs:
            results = measure(world, config, args.size, env)
            worst = [max(r[i] for r in results) for i in (2, 3, 4)]
            one = worst if world == 1 else one
            label = "one worker" if world == 1 else f"{world} workers, {config}"
            cells = [
                ", ".join(f"{r[i]:.0f}" for r in results) + f" ({w / o:.2f}x)"
                for i, w, o in zip((2, 3, 4), worst, one)
            ]
            kept = max(r[5] for r in results)
            rows.append(f"| {allocator} | {label} | {' | '.join(cells)} | {kept:.1f} |")
            print(rows[-1], flush=True)
    command = "python -m bench.patch_memory " + " ".join(sys.argv[1:])
    body = (
        f"## Patch parallelism: per-worker activation memory (built-in model, {args.size}x{args.size}, CFG batch 2)\n\n"
        + provenance(command)
        + "\n"
        + (__doc__.split("\n\n", 2)[2].split("Writes the")[0].strip())
        + "\n\n| allocator | configuration | first forward, MB per worker (largest vs one worker) | activations (RSS) | "
        + "live tensors | MB kept between steps (displaced cache) |\n"
        + "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    write_section("patch-memory", body)


if __name__ == "__main__":
    main()
