"""Video strategies side by side (frames, sequence, bands) on a Wan and a HunyuanVideo layout, and the frame
pipeline's memory per worker for every video family.

    .venv/bin/python -m bench.video_strategies --part speed    # table 1: ~25 min on 2 idle cores (run it idle)
    .venv/bin/python -m bench.video_strategies --part memory   # table 2: 16 min at load 6-9 on 2 cores
    .venv/bin/python -m bench.video_strategies --quick         # both, small, one round: ~4-5 min; writes nothing

Each strategy's memory at 64 / 256 / 1,024 frames on the speed table's models is ``bench.video_strategy_memory``.

Both tables render through the real Ray pool (``runtime.jobs.video.run_video_render`` on a ``DevicePool`` of 2
CPU workers, one torch thread each), as a job would; the models are pipeline directories built offline and saved
to a temporary directory (``bench.video_models``).

Table 1 ("video-strategies"): per model and frame count, frames/s (whole render after set-up: denoise, decode,
MP4) of
- ``1 worker, blocks``: the frame pipeline's block-wise schedule on one worker (what ``frames`` splits);
- ``frames x2``: that schedule on 2 stages (DualParal: layers and frame blocks pipelined);
- ``1 worker, one block``: the whole video as one block on one worker (what ``sequence`` and ``bands`` split:
  every frame attends to every frame, so it costs more than the block-wise schedule and its memory grows with
  the video);
- ``sequence x2``: the one block under diffusers' context parallelism, Ulysses over 2 workers (the model's
  ``_cp_plan``), or the family's own Ulysses where diffusers has none (HunyuanVideo: ``ModelFamily.sequence_plan``);
  a model with neither is listed with the reason;
- ``bands x2``: the one block in row bands of every frame on 2 workers (sync, exact; the family's patch plan);
- ``1 process x 2 threads``: the block-wise schedule in this process with two torch threads, the CPU baseline.
Rounds alternate the configurations (A, B, C, ..., A, ...; ``bench.common.alternate``), a warm-up round first;
medians, every run listed, each against its own 1-worker baseline (frames against the block-wise one, sequence
and bands against the one-block one) and the frame pipeline against Ulysses.

Table 2 ("video-memory"): each family's tiny pipeline (memory flatness is about the queue, not the model's size)
on 2 frame-pipeline stages at 64 / 256 / 1,024 frames, few steps; peak RSS per worker, reset per job (the
worker's ``memory.reset_peak`` after loading), and its spread (max - min) / min across the lengths against the
10% target. Each family gets a fresh pool, so no other model sits in the workers, and a warm-up render at the
shortest length (shown, as the run-to-run variation at one length). Once per allocator setting (``ALLOCATORS``):
by default glibc's malloc as it comes (``glibc``), what the workers do (``default``: a fixed 8 MiB mmap threshold
and a heap trim per block) and a fixed 128 KiB threshold (``fixed-mmap``), which tells what the pipeline keeps alive
from what the heap's holes keep resident; each part alone and other thresholds on request.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from bench.common import alternate, median, provenance, write_section
from bench.frame_pipeline import two_threads_fps
from bench.video_models import SPEED_MODELS, TINY_MODELS, SpeedModel, TinyModel
from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from pipelines.families import family_for_dir
from runtime.jobs.video import run_video_render
from runtime.pool import DevicePool, PoolConfig

MIB = 2**20
FLAT_TARGET = 10.0
"""The issue's target: the frame pipeline's peak memory per worker within 10% from the shortest video to the longest."""


@dataclass(frozen=True)
class Layout:
    """How one configuration renders: its strategy and workers, and whether the video is one block."""

    label: str
    strategy: str
    degree: int
    whole: bool = False
    """The whole video as one block (the one-block baseline and the whole-video strategies)."""
    baseline: str = "1 worker, blocks"
    """The row its speed-up is taken against."""


LAYOUTS = (
    Layout("1 worker, blocks", "none", 1),
    Layout("frames x2", "frames", 2),
    Layout("1 worker, one block", "none", 1, whole=True, baseline="1 worker, one block"),
    Layout("sequence x2 (Ulysses)", "sequence", 2, whole=True, baseline="1 worker, one block"),
    Layout("bands x2 (sync)", "patch", 2, whole=True, baseline="1 worker, one block"),
)
THREADS = "1 process x 2 threads"


def video_spec(model: str, frames: int, layout: Layout, args: argparse.Namespace, **render) -> VideoSpec:
    """The validated spec of one render (a whole-video layout: one block, no context)."""
    block = frames if layout.whole else render.get("block_frames", args.block_frames)
    context = 0 if layout.whole else render.get("context_frames", args.context_frames)
    spec = VideoSpec(
        model=model,
        height=render.get("size", args.size),
        width=render.get("size", args.size),
        frames=frames,
        block_frames=block,
        context_frames=context,
        steps=render.get("steps", args.steps),
        seed=3,
        guidance_scale=1.0,  # one branch, as every figure of these sections (the pipelines' defaults guide)
        parallel=VideoParallelSpec(strategy=layout.strategy, degree=layout.degree),
    )
    spec.validate()
    return spec


def unavailable(model: str, layout: Layout, frames: int, args: argparse.Namespace) -> str | None:
    """Why ``layout`` cannot render this model (the family's strategies, diffusers' plan, the spec's checks)."""
    family = family_for_dir(model)
    if layout.strategy not in family.strategies:
        if layout.strategy == "sequence":
            import diffusers

            denoiser = family.component_config(model, family.denoiser).get("_class_name", "the transformer")
            plan = getattr(getattr(diffusers, denoiser, None), "_cp_plan", None)
            if plan is None:
                return f"no plan in diffusers: diffusers {diffusers.__version__} ships no `_cp_plan` for {denoiser}"
            return f"Tessera's {family.name} family has no sequence plan (diffusers has a `_cp_plan`)"
        return (
            f"no band plan: Tessera's {family.name} family has no `patch_plan` (its strategies: "
            f"{', '.join(family.strategies)})"
        )
    try:
        video_spec(model, frames, layout, args)
    except SpecError as err:
        return f"refused: {err}"
    return None


@dataclass
class Runs:
    """One configuration's runs: frames/s per round (its warm-up's dropped by ``alternate``), the last report."""

    layout: Layout
    metas: list[dict] = field(default_factory=list)
    error: str | None = None


def reason(err: Exception) -> str:
    """An error's last line (a worker's own error, under Ray's traceback of it), shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]


def render_fps(pool: DevicePool, spec: VideoSpec, out: Path, runs: Runs) -> float:
    """frames/s of one render through the pool; NaN (and the reason kept) once a configuration has failed."""
    if runs.error is not None:
        return math.nan
    try:
        meta = run_video_render(pool, spec, out / f"run-{time.monotonic_ns()}.mp4", progress=False)
    except Exception as err:  # noqa: BLE001 - reported in the table instead (memory, a refused plan...)
        runs.error = reason(err)
        traceback.print_exc()
        return math.nan
    runs.metas.append(meta)
    return meta["frames_per_s"]


def speed_section(
    pool: DevicePool, name: str, model: str, frames: int, args: argparse.Namespace, out: Path
) -> str:
    """Table 1's part for one model and frame count."""
    calls: dict[str, Callable[[], float]] = {}
    runs: dict[str, Runs] = {}
    missing: dict[str, str] = {}
    for layout in LAYOUTS:
        if layout.whole and args.whole_max_frames and frames > args.whole_max_frames:
            missing[layout.label] = f"not run: over --whole-max-frames {args.whole_max_frames}"
            continue
        why = unavailable(model, layout, frames, args)
        if why is not None:
            missing[layout.label] = why
            continue
        spec = video_spec(model, frames, layout, args)
        runs[layout.label] = Runs(layout)
        calls[layout.label] = lambda s=spec, r=runs[layout.label]: render_fps(pool, s, out, r)
    blocks_spec = video_spec(model, frames, LAYOUTS[0], args)

    def threads() -> float:
        fps = two_threads_fps(blocks_spec, out)
        torch.set_num_threads(1)
        return fps

    calls[THREADS] = threads
    load_before = os.getloadavg()
    speed = alternate(calls, repeats=args.repeats, warmup=args.warmup)
    load_after = os.getloadavg()
    medians = {k: median(v) for k, v in speed.items() if v and not any(math.isnan(x) for x in v)}
    rows = []
    for label, values in speed.items():
        run = runs.get(label)
        if run is not None and run.error is not None:
            rows.append(f"| {label} | failed: {run.error} | | | |")
            continue
        base = medians.get(run.layout.baseline if run else LAYOUTS[0].label)
        m = medians[label]
        peaks = "(this process)"
        if run is not None:
            peaks = " / ".join(f"{w['peak_memory_bytes'] / MIB:.0f}" for w in run.metas[-1]["workers"])
        versus = f"{m / base:.2f}x" if base else "n/a"
        rows.append(f"| {label} | {m:.2f} | {versus} | {', '.join(f'{v:.2f}' for v in values)} | {peaks} |")
    for label, why in missing.items():
        rows.append(f"| {label} | {why} | | | |")
    family = family_for_dir(model)
    frames_out = runs[LAYOUTS[0].label].metas[-1]["frames"] if runs[LAYOUTS[0].label].metas else frames
    lines = [
        f"### {name} ({family.name}), {frames} frames ({frames_out} decoded)",
        "",
        f"Load average (1, 5, 15 min) before {_load(load_before)}, after {_load(load_after)}.",
        "",
        "| configuration | frames/s (median) | vs its 1-worker baseline | runs | peak MiB per worker (last run) |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    pipe, seq = medians.get("frames x2"), medians.get(LAYOUTS[3].label)
    if pipe and seq:
        lines.append(f"Frame pipeline vs Ulysses, both on 2 workers: {pipe / seq:.2f}x (target >= 1.0x at 256 frames).")
    for label in (LAYOUTS[0].label, "frames x2"):
        run = runs.get(label)
        if run is None or not run.metas:
            continue
        meta = run.metas[-1]
        cut = f" (stage cut {meta['stage_boundaries']})" if meta["degree"] > 1 else ""
        lines.append(
            f"{label}{cut}, last run, per worker: model / VAE decode CPU s, wait s: "
            + "; ".join(f"{w['compute_cpu_s']:.1f} / {w['decode_cpu_s']:.1f}, {w['wait_s']:.1f}" for w in meta["workers"])
            + "."
        )
    return "\n".join(lines) + "\n"


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def run_speed(args: argparse.Namespace, command: str, root: Path, out: Path) -> str:
    size = SpeedModel(heads=args.heads, head_dim=args.head_dim, layers=args.layers, patch=args.patch)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=1800))
    parts = []
    try:
        for name in args.models:
            model = str(SPEED_MODELS[name](root / f"speed-{name}", size))
            for frames in args.frames:
                print(f"speed: {name}, {frames} frames", file=sys.stderr, flush=True)
                parts.append(speed_section(pool, name, model, frames, args, out))
    finally:
        pool.shutdown()
        ray.shutdown()
    return f"""## Video strategies on 2 CPU workers: frames, sequence (Ulysses), bands ({', '.join(args.models)})

Each model is the tiny pipeline's text encoders, VAE and scheduler with a bigger transformer ({size.describe()}),
{args.size}x{args.size} px, {args.steps} steps per block; the block-wise layouts in blocks of {args.block_frames}
frames with {args.context_frames} context frames, the one-block layouts the whole video as one block. Rendered
through the Ray pool (2 workers, one torch thread each) by `run_video_render`; frames/s over the whole render after
set-up (denoise, VAE decode, MP4), median of {args.repeats} alternated rounds after {args.warmup} warm-up.
The frame pipeline attends within a block and its neighbours' context frames; the one-block layouts attend
across the whole video, which costs more per frame and grows in memory with it: compare `frames x2` with
`1 worker, blocks`, the whole-video strategies with `1 worker, one block`, and the frame pipeline with Ulysses by
frames/s.

{provenance(command)}
""" + "\n".join(parts)


NO_HUGE_PAGES = {"GLIBC_TUNABLES": ""}
ALLOCATORS = {
    "glibc": {"TESSERA_MMAP_THRESHOLD": "0", "TESSERA_HEAP_TRIM": "0", **NO_HUGE_PAGES},
    "trim": {"TESSERA_MMAP_THRESHOLD": "0", **NO_HUGE_PAGES},
    "mmap-8m": {"TESSERA_HEAP_TRIM": "0", **NO_HUGE_PAGES},
    "default": {},
    "default-no-huge-pages": dict(NO_HUGE_PAGES),
    "mmap-4m": {"TESSERA_MMAP_THRESHOLD": str(4 * MIB), "TESSERA_HEAP_TRIM": "0", **NO_HUGE_PAGES},
    "mmap-16m": {"TESSERA_MMAP_THRESHOLD": str(16 * MIB), "TESSERA_HEAP_TRIM": "0", **NO_HUGE_PAGES},
    "fixed-mmap": {"MALLOC_MMAP_THRESHOLD_": "131072", "TESSERA_HEAP_TRIM": "0", **NO_HUGE_PAGES},
}
"""glibc settings of the workers' environment for the memory table (``runtime.heap``). ``glibc``: its malloc as it
comes, whose dynamic mmap threshold rises to the size of each mapped block freed (up to 32 MiB), after which blocks
that size come from the heap, whose holes the resident set keeps: the peak RSS then moves from run to run by more
than the pipeline's own memory does. ``trim``: the same, with ``malloc_trim(0)`` after every finished block.
``mmap-8m``: a fixed 8 MiB threshold set at worker start (``mallopt``; it also turns the dynamic one off), blocks
over it mapped on their own, the rest on the heap. ``default``: what the workers do, both, with malloc's
transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``); ``default-no-huge-pages``: both without them.
Every entry but ``default`` runs without the huge pages. ``mmap-4m``,
``mmap-16m``: the threshold alone at 4 and 16 MiB. ``fixed-mmap``: glibc's ``MALLOC_MMAP_THRESHOLD_=131072`` (the
worker then sets none): every tensor over 128 KiB mapped and unmapped on its own, so the RSS follows what is alive
(about 40% slower on CPU)."""
MEMORY_ALLOCATORS = ["glibc", "default", "fixed-mmap"]
"""The memory table's allocators unless ``--allocators`` says otherwise."""


def memory_row(pool: DevicePool, tiny: TinyModel, model: str, frames: list[int], args, out: Path) -> dict:
    """Peak RSS per worker for each length (or why it did not render), after a warm-up render at the first."""
    render = dict(
        size=tiny.size, steps=args.memory_steps, block_frames=tiny.block_frames, context_frames=tiny.block_frames // 2
    )
    layout = Layout("frames x2", "frames", 2)
    peaks: dict[str, list[int] | str] = {}
    trims: list[list[float]] = []  # per worker: [trims, seconds] over the recorded runs
    faults: list[int] = []  # per worker: minor page faults of the longest render
    for key, length in [("warm-up", frames[0]), *((str(n), n) for n in frames)]:
        meta = measured_render(
            pool, lambda n=length: video_spec(model, n, layout, args, **render), out / f"mem-{tiny.name}-{length}.mp4"
        )
        if isinstance(meta, str):
            peaks[key] = meta
            continue
        peaks[key] = [w["peak_memory_bytes"] for w in meta["workers"]]
        if key != "warm-up":
            trims = trims or [[0, 0.0] for _ in meta["workers"]]
            for total, w in zip(trims, meta["workers"]):
                total[0] += w["heap_trims"]
                total[1] += w["heap_trim_s"]
            faults = [w["minor_faults"] for w in meta["workers"]]
        print(f"  {tiny.name} {key} ({length} frames): {[p // MIB for p in peaks[key]]} MiB", file=sys.stderr)
    return {"peaks": peaks, "render": render, "trims": trims, "faults": faults}


def measured_render(pool: DevicePool, spec_of: Callable[[], VideoSpec], path: Path) -> dict | str:
    """One render's metadata through the pool, or why it did not render (the spec refused, the worker failed)."""
    try:
        return run_video_render(pool, spec_of(), path, progress=False)
    except Exception as err:  # noqa: BLE001 - the table says why
        traceback.print_exc()
        return reason(err)


def spread(values: list[int]) -> float:
    """(max - min) / min, in percent."""
    return (max(values) - min(values)) / min(values) * 100


def family_spreads(peaks: dict, lengths: list[int]) -> list[float] | None:
    """Per worker, the spread of one family's peaks across the lengths; None unless every length rendered."""
    measured = [peaks.get(str(n)) for n in lengths]
    if len(lengths) < 2 or not all(isinstance(m, list) for m in measured):
        return None
    return [spread(list(col)) for col in zip(*measured)]


def memory_summary(results: dict, lengths: list[int]) -> str:
    """Per allocator, the largest spread (which family and stage) and whether every family met the target."""
    lines = []
    for allocator in dict.fromkeys(a for _, a in results):
        spreads = {t: family_spreads(r["peaks"], lengths) for (t, a), r in results.items() if a == allocator}
        done = {t: s for t, s in spreads.items() if s is not None}
        if not done:
            continue
        tiny, worst = max(done.items(), key=lambda item: max(item[1]))
        stage = worst.index(max(worst))
        met = len(done) == len(spreads) and max(max(s) for s in done.values()) <= FLAT_TARGET
        lines.append(
            f"`{allocator}`: largest spread {max(worst):.1f}% ({tiny.label}, stage {stage}); "
            + ("every family within 10%." if met else "not every family within 10%.")
        )
    return " ".join(lines)


def memory_rows(results: dict, lengths: list[int]) -> tuple[list[str], list[str]]:
    """The table's rows (one per family and allocator) and the notes on what failed."""
    rows, notes = [], []
    for (tiny, allocator), result in results.items():
        peaks = result["peaks"]
        cells = []
        for key in ["warm-up", *map(str, lengths)]:
            value = peaks.get(key, "not run")
            cells.append(" / ".join(f"{p / MIB:.0f}" for p in value) if isinstance(value, list) else "failed")
            if isinstance(value, str):
                notes.append(f"- {tiny.label} ({allocator}) at {key} frames: {value}")
        spreads = family_spreads(peaks, lengths)
        shown = " / ".join(f"{s:.1f}%" for s in spreads) if spreads else "n/a"
        trims = " / ".join(
            f"{seconds / count * 1e3:.2f} ms x {count}" if count else "-" for count, seconds in result.get("trims", [])
        )
        met = "yes" if spreads and max(spreads) <= FLAT_TARGET else "no"
        r = result["render"]
        rows.append(
            f"| {tiny.label} | {allocator} | {r['size']}, {r['block_frames']} / {r['context_frames']} | "
            + " | ".join(cells)
            + f" | {trims or '-'} | {' / '.join(f'{f / 1e3:.0f}k' for f in result.get('faults', [])) or '-'}"
            + f" | {shown} | {met} |"
        )
    return rows, notes


def run_memory(args: argparse.Namespace, command: str, root: Path, out: Path) -> str:
    chosen = [t for t in TINY_MODELS if t.name in args.families]
    models = {}
    results = {}
    load_before = os.getloadavg()
    for allocator in args.allocators:
        ray.init(  # a fresh local cluster each time, never another one running on this machine
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        try:
            for tiny in chosen:
                print(f"memory: {tiny.label}, {allocator} allocator", file=sys.stderr, flush=True)
                if tiny not in models:
                    models[tiny] = str(tiny.save(root))
                env = dict(ALLOCATORS[allocator])  # the pool's env: its GLIBC_TUNABLES replaces the pool's default
                pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=1800, env=env))
                try:
                    results[tiny, allocator] = memory_row(pool, tiny, models[tiny], args.memory_frames, args, out)
                finally:
                    pool.shutdown()
        finally:
            ray.shutdown()
    load_after = os.getloadavg()
    lengths = args.memory_frames
    head = (
        f"| family | allocator | px, block / context frames | warm-up ({lengths[0]} frames) | "
        + " | ".join(f"{n} frames" for n in lengths)
        + f" | heap trim per call x calls, stage 0 / stage 1 | minor page faults at {lengths[-1]} frames, stage 0 / 1"
        + " | spread stage 0 / stage 1 | <= 10% |\n|---|---|---|---|"
        + "---|" * len(lengths)
        + "---|---|---|---|"
    )
    rows, notes = memory_rows(results, lengths)
    return f"""## Frame pipeline memory per worker, every video family (2 stages, tiny models)

Each family's tiny test pipeline (`tests/video/_tiny_*.py`) on 2 frame-pipeline stages through the Ray pool,
{args.memory_steps} steps per block (few, so 1,024 frames stays affordable; at most `steps` blocks are alive in
the queue whatever the length), blocks of two latent frames with one latent frame of context on each side.
Peak RSS in MiB per worker (stage 0 / stage 1), reset per job after the model is loaded; each family on a fresh
pool, a warm-up render at {lengths[0]} frames first (shown: beside the recorded {lengths[0]}-frame run it is the
run-to-run variation at one length). Spread: (max - min) / min across the recorded lengths, per worker (target:
within 10%). Allocator (`runtime.heap`, the workers' environment): glibc's malloc as it comes (`glibc`:
`TESSERA_MMAP_THRESHOLD=0 TESSERA_HEAP_TRIM=0`); what the workers do (`default`: a fixed 8 MiB mmap threshold set at
worker start, tensors over it mapped on their own, and `malloc_trim(0)` after each finished block on each CPU stage
that decodes or writes it; the trim's cost per call and calls per worker over the recorded runs are shown); each
alone (`trim`, `mmap-8m`; `mmap-4m`, `mmap-16m`: other thresholds); and `MALLOC_MMAP_THRESHOLD_=131072`
(`fixed-mmap`: every tensor over 128 KiB mapped on its own, so freed tensors leave no heap holes in the resident
set). Minor page faults (pages first touched: a fresh mapping, or heap pages given back and touched again) count
the allocator's cost where time on a loaded machine cannot. Which stage decodes a causal VAE's blocks follows the
measured stage costs, so it can change from one run to the next.
Load average (1, 5, 15 min) before {_load(load_before)}, after {_load(load_after)} (memory, unlike speed, is hardly
moved by other load).

{provenance(command)}
{head}
{chr(10).join(rows)}
{chr(10).join(notes)}

{memory_summary(results, lengths)}
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="small sizes and lengths, one round; writes nothing")
    ap.add_argument("--models", nargs="*", default=list(SPEED_MODELS), choices=list(SPEED_MODELS))
    ap.add_argument("--size", type=int, default=64, help="speed table: frame height and width in pixels")
    ap.add_argument("--frames", type=int, nargs="*", default=[64, 256], help="speed table: video lengths")
    ap.add_argument("--block-frames", type=int, default=16, help="speed table: frames per block (4 latent frames)")
    ap.add_argument("--context-frames", type=int, default=4, help="speed table: each neighbour's context frames")
    ap.add_argument("--steps", type=int, default=10, help="speed table: steps per block")
    ap.add_argument("--heads", type=int, default=SpeedModel.heads)
    ap.add_argument("--head-dim", type=int, default=SpeedModel.head_dim)
    ap.add_argument("--layers", type=int, default=SpeedModel.layers)
    ap.add_argument("--patch", type=int, default=SpeedModel.patch)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--whole-max-frames", type=int, default=0, help="skip the one-block layouts above this length")
    ap.add_argument("--families", nargs="*", default=[t.name for t in TINY_MODELS], choices=[t.name for t in TINY_MODELS])
    ap.add_argument("--memory-frames", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--memory-steps", type=int, default=2)
    ap.add_argument("--allocators", nargs="*", default=MEMORY_ALLOCATORS, choices=list(ALLOCATORS))
    ap.add_argument("--no-write", action="store_true", help="print the sections instead of writing them")
    args = ap.parse_args(argv)
    command = "python -m bench.video_strategies " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.frames, args.steps, args.repeats, args.warmup = [32], 2, 1, 0
        args.memory_frames, args.no_write = [32, 64], True
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-video-models-"))
    out = Path(tempfile.mkdtemp(prefix="tessera-bench-video-strategies-"))
    try:
        for part, run, section in (("speed", run_speed, "video-strategies"), ("memory", run_memory, "video-memory")):
            if args.part not in (part, "all"):
                continue
            body = run(args, command, root, out)
            print(body)
            if not args.no_write:
                write_section(section, body)
    finally:  # the models (~100 MB for the speed ones) and the videos
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
