"""Peak memory per worker of every video strategy at 64 / 256 / 1,024 frames, on the speed table's models.

    .venv/bin/python -m bench.video_strategy_memory            # ~25 min on 2 cores; writes "video-strategy-memory"
    .venv/bin/python -m bench.video_strategy_memory --quick    # 32 / 64 frames, one model; writes nothing

``bench.video_strategies``' memory table says the frame pipeline stays flat for every family on tiny models; its
speed table gives each strategy's peak at 64 and 256 frames only, from the last of its timed runs. This one
renders each configuration of the speed table (``LAYOUTS``: the block-wise schedule on 1 worker and on 2 frame
stages, the whole video as one block on 1 worker, under Ulysses and in bands on 2) once per length on the same
Wan- and HunyuanVideo-layout transformers, so the lengths compare per configuration: the block-wise rows should
stay flat, the whole-video ones grow with the video (every frame attends to every frame, and each worker holds
its share of the whole video's activations). Each configuration gets a fresh 2-worker pool (a larger render's
heap never sits under a smaller one's peak) and a warm-up render at the shortest length, as in the memory table;
few steps per block (``--steps``), since a whole-video render at 1,024 frames costs the square of its tokens.
Peak RSS per worker, reset after the model is loaded (``runtime.memory``), under the workers' default allocator.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import ray
import torch

from bench.common import provenance, write_section
from bench.video_models import SPEED_MODELS, SpeedModel
from bench.video_strategies import (
    FLAT_TARGET,
    LAYOUTS,
    MIB,
    Layout,
    measured_render,
    spread,
    unavailable,
    video_spec,
)
from runtime.pool import DevicePool, PoolConfig


def layout_peaks(model: str, layout: Layout, lengths: list[int], args: argparse.Namespace, out: Path) -> dict:
    """Per length (and the warm-up): peak RSS per worker in bytes, or why it did not render."""
    peaks: dict[str, list[int] | str] = {}
    why = unavailable(model, layout, lengths[0], args)
    if why is not None:
        return {"n/a": why}
    pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=1800))
    try:
        for key, frames in [("warm-up", lengths[0]), *((str(n), n) for n in lengths)]:
            meta = measured_render(
                pool, lambda n=frames: video_spec(model, n, layout, args), out / f"{layout.strategy}-{frames}.mp4"
            )
            if isinstance(meta, str):
                peaks[key] = meta
                continue
            peaks[key] = [w["peak_memory_bytes"] for w in meta["workers"]]
            print(f"  {layout.label} {key}: {[p // MIB for p in peaks[key]]} MiB", file=sys.stderr, flush=True)
    finally:
        pool.shutdown()
    return peaks


def row(name: str, layout: Layout, peaks: dict, lengths: list[int]) -> str:
    """One configuration's cells: the peaks per length, the spread (block-wise) or growth (whole video)."""
    if "n/a" in peaks:
        return f"| {name} | {layout.label} | {peaks['n/a']} |" + " |" * (len(lengths) + 2)
    cells = []
    for key in ["warm-up", *map(str, lengths)]:
        value = peaks.get(key, "not run")
        cells.append(" / ".join(f"{p / MIB:.0f}" for p in value) if isinstance(value, list) else f"failed: {value}")
    measured = [peaks.get(str(n)) for n in lengths]
    if not all(isinstance(m, list) for m in measured):
        return f"| {name} | {layout.label} | " + " | ".join(cells) + " | n/a | n/a |"
    per_worker = list(zip(*measured))
    spreads = [spread(list(col)) for col in per_worker]
    growth = [col[-1] / col[0] for col in per_worker]
    flat = "yes" if max(spreads) <= FLAT_TARGET else "no"
    return (
        f"| {name} | {layout.label} | "
        + " | ".join(cells)
        + f" | {' / '.join(f'{s:.1f}%' for s in spreads)} ({' / '.join(f'{g:.2f}x' for g in growth)}) | {flat} |"
    )


def run(args: argparse.Namespace, command: str, root: Path, out: Path) -> str:
    size = SpeedModel(heads=args.heads, head_dim=args.head_dim, layers=args.layers, patch=args.patch)
    lengths = args.frames
    rows = []
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        for name in args.models:
            model = str(SPEED_MODELS[name](root / f"speed-{name}", size))
            for layout in LAYOUTS:
                print(f"memory: {name}, {layout.label}", file=sys.stderr, flush=True)
                rows.append(row(name, layout, layout_peaks(model, layout, lengths, args, out), lengths))
    finally:
        ray.shutdown()
    load_after = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    head = (
        f"| model | configuration | warm-up ({lengths[0]} frames) | "
        + " | ".join(f"{n} frames" for n in lengths)
        + f" | spread (growth {lengths[-1]} / {lengths[0]} frames) per worker | <= 10% |\n|---|---|---|"
        + "---|" * len(lengths)
        + "---|---|"
    )
    return f"""## Video strategies' memory per worker by length (wan, hunyuanvideo layouts, 2 CPU workers)

The speed table's models (the tiny pipeline's text encoders, VAE and scheduler with a bigger transformer:
{size.describe()}), {args.size}x{args.size} px, {args.steps} steps per block; the block-wise configurations in
blocks of {args.block_frames} frames with {args.context_frames} context frames, the whole-video ones the video as
one block. Each configuration on a fresh pool of 2 workers (one torch thread each, the default allocator), a
warm-up render at {lengths[0]} frames, then one render per length through `run_video_render`. Peak RSS in MiB per
worker (the workers a configuration uses), reset after the model is loaded. Spread: (max - min) / min across the
lengths (the issue's target, within 10%, is the frame pipeline's); growth: the longest video's peak over the
shortest's. Load average (1, 5, 15 min) before {load_before}, after {load_after}.

{provenance(command)}
{head}
{chr(10).join(rows)}
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 / 64 frames, the wan layout; writes nothing")
    ap.add_argument("--models", nargs="*", default=list(SPEED_MODELS), choices=list(SPEED_MODELS))
    ap.add_argument("--frames", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--block-frames", type=int, default=16)
    ap.add_argument("--context-frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--heads", type=int, default=SpeedModel.heads)
    ap.add_argument("--head-dim", type=int, default=SpeedModel.head_dim)
    ap.add_argument("--layers", type=int, default=SpeedModel.layers)
    ap.add_argument("--patch", type=int, default=SpeedModel.patch)
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    command = " ".join(["python -m bench.video_strategy_memory", *(argv if argv is not None else sys.argv[1:])])
    if args.quick:
        args.frames, args.models, args.no_write = [32, 64], ["wan"], True
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-strategy-memory-models-"))
    out = Path(tempfile.mkdtemp(prefix="tessera-bench-strategy-memory-"))
    try:
        body = run(args, command, root, out)
        print(body)
        if not args.no_write:
            write_section("video-strategy-memory", body)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
