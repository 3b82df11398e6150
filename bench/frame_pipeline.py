"""Layer-and-frame pipelining (DualParal) on a video model: speed and memory per worker.

    .venv/bin/python -m bench.frame_pipeline --size 128 --frames 64 --repeats 5
    .venv/bin/python -m bench.frame_pipeline --model /path/to/HunyuanVideoPipeline --guidance-scale 6 ...

The model is the built-in video model, or with ``--model`` any local video pipeline directory its family
renders (Wan, LTX-Video, CogVideoX, HunyuanVideo: ``frames`` and ``block_frames`` count video frames, in
multiples of the VAE's frames per latent frame).

Through the real Ray pool and gloo groups: frames per second with 1 worker vs 2 pipeline stages (one
torch thread each), alternated (A, B, C, A, ...), beside one process using two threads (the honest CPU
baseline) and two 1-worker renders at once on the two workers (the machine's ceiling for any two workers:
nothing is exchanged, so what they lose against one render alone is the cores', not the pipeline's; each
writes its own MP4, so two encoders run there against one), and the same 1-worker and 2-stage renders without
Ray (``bare_stage``: spawned processes set up as pool workers are, in a gloo group), which separates what the
pipeline loses from what the pool's processes beside it take from the cores. Around every run the machine's busy
CPU seconds are read (``machine_busy_seconds``): whether the cores had room left, and what the render cost in
CPU, every process counted (ffmpeg's encoder, Ray's processes). Then peak memory per worker (peak RSS, reset
per job) for 64, 256 and 1,024 frames, which should stay flat: at most ``steps`` blocks are alive and finished
blocks stream to the MP4. frames/s counts the whole render after set-up: denoising, decode and MP4 writing. Writes the "frame-pipeline"
section of BENCHMARKS.md (``frame-pipeline-<family>`` for a ``--model`` directory). With ``--guidance-scale`` above 1
(a model with a negative branch) the rounds add the frame pipeline with a guidance branch per worker
(``parallel.cfg``) and the section's name ends in ``-guided``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.common import (
    DroppingWriter,
    alternate,
    environment,
    machine_busy_seconds,
    median,
    provenance,
    spawn_ranks,
    write_section,
)
from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from pipelines.families import family_for_dir
from runtime.heap import fix_mmap_threshold, worker_env
from runtime.jobs.video import run_video_render
from runtime.jobs.video_session import VideoSession, open_video_session
from runtime.pool import DevicePool, PoolConfig

BUILTIN = "builtin-video"
CEILING = "2 renders x 1 worker at once"
ONE, TWO = "1 worker x 1 thread", "2 stages x 1 thread"
BARE_ONE, BARE_TWO = "1 worker, no Ray", "2 stages, no Ray"
BRANCHES = "2 workers, a guidance branch each"
"""With ``--guidance-scale`` above 1: ``parallel.cfg`` on the frame pipeline, each worker one branch on one stage."""


def spec_for(args: argparse.Namespace, frames: int, degree: int, cfg: bool = False) -> VideoSpec:
    spec = VideoSpec(
        model=args.model,
        guidance_scale=args.guidance_scale,
        context_frames=args.context_frames,
        height=args.size,
        width=args.size,
        frames=frames,
        block_frames=args.block_frames,
        steps=args.steps,
        parallel=VideoParallelSpec(strategy="frames" if degree > 1 else "none", degree=degree, cfg=cfg),
    )
    spec.validate()
    return spec


def load_pipe(spec: VideoSpec):
    """The video pipeline of ``spec``'s model directory, on CPU."""
    path = spec.model_path()
    return family_for_dir(path).load(path, spec.dtype, "cpu")


def measured(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``run()``'s result, the machine's busy CPU seconds over it (``machine_busy_seconds``; 0 without /proc/stat)
    and its wall seconds."""
    busy, started = machine_busy_seconds(), time.perf_counter()
    value = run()
    elapsed = time.perf_counter() - started
    return value, (machine_busy_seconds() or 0.0) - (busy or 0.0), elapsed


def rendered(session: VideoSession) -> dict:
    """Run an opened session to its end; its report (frames, ...)."""
    session.advance()
    return session.finish()


def two_threads_fps(spec: VideoSpec, out: Path) -> float:
    """One process (this one) with two torch threads running the same block-wise schedule."""
    torch.set_num_threads(2)
    session = VideoSession(load_pipe(spec), spec.placed(spec.model, 1), group=None, video_path=str(out / "two-threads.mp4"))
    report, _, elapsed = measured(lambda: rendered(session))
    return report["frames"] / elapsed


def bare_setup(rank: int, world: int, spec: VideoSpec, port: int) -> tuple[Any, VideoSpec]:
    """This spawned process set up as a pool worker is (one torch thread, its malloc settings), in a gloo group on
    loopback when ``world`` > 1: the pipeline of ``spec``'s model, and the spec of a warm-up render of a block per stage
    (2 at least: fewer are refused), which times the layers and the decode as a pool worker's first job does."""
    torch.set_num_threads(1)
    fix_mmap_threshold("cpu")
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    warm = spec.placed(spec.model, world)
    warm.frames = max(2, world) * spec.block_frames
    return load_pipe(spec), warm


def bare_stage(rank: int, world: int, spec: VideoSpec, video: str, drop: bool, port: int, queue) -> None:
    """One stage of a render without Ray: a process spawned with a pool worker's set-up (one torch thread, its malloc
    settings), in a gloo group on loopback when ``world`` > 1. A render of a block per stage (2 at least) warms it
    first (it times the layers and the decode, as a pool worker's first job does); rank 0 puts (rank, frames/s of the
    render after its set-up, the machine's busy CPU seconds over it, its wall seconds) on ``queue``, the other ranks
    (rank, 0, 0, 0).
    ``drop``: stage 0 counts the decoded frames and drops them (``DroppingWriter``) instead of writing the MP4."""
    pipe, warm = bare_setup(rank, world, spec, port)
    for run, path_out in ((warm, f"{video}.warm.mp4"), (spec, video)):
        session = (
            VideoSession(pipe, run, dist.group.WORLD if world > 1 else None, make_writer=DroppingWriter)
            if drop
            else open_video_session(pipe, run, video_path=path_out)
        )
        if world > 1:
            dist.barrier()
        report, busy, elapsed = measured(lambda session=session: rendered(session))
    if world > 1:
        dist.destroy_process_group()
    queue.put((rank, report["frames"] / elapsed, busy, elapsed) if rank == 0 else (rank, 0.0, 0.0, 0.0))


def bare_fps(spec: VideoSpec, video: Path, usage: list[tuple[float, float]], drop: bool = False) -> float:
    """``spec`` rendered by ``bare_stage`` processes (its degree of them), started with the environment a pool gives
    its CPU workers; appends (busy CPU seconds, wall seconds) of the render to ``usage``."""
    degree = spec.parallel.degree
    with environment(worker_env("cpu", {})):
        results = spawn_ranks(bare_stage, degree, spec.placed(spec.model, degree), str(video), drop)
    _, fps, busy, elapsed = results[0]
    usage.append((busy, elapsed))
    return fps


def usage_lines(usage: dict[str, list[tuple[float, float]]], speed: dict[str, list[float]]) -> str:
    """What each configuration took from the machine (medians over the measured rounds), and what 2 stages would
    reach at their CPU cost if both cores were busy the whole time: one worker's wall over half the stages' CPU."""
    cores = os.cpu_count() or 1
    if not usage or any(not values for values in usage.values()):
        return ""
    cpu = {name: median([busy for busy, _ in values]) for name, values in usage.items()}
    wall = {name: median([elapsed for _, elapsed in values]) for name, values in usage.items()}
    parts = [
        f"{name} {cpu[name]:.1f} s in {wall[name]:.1f} s ({cpu[name] / (wall[name] * cores):.0%} of {cores} cores)"
        for name in usage
    ]
    text = (
        "Machine CPU seconds over each run, every process counted (`/proc/stat`; medians; a pool run's include its "
        "stages' set-up and the driver): " + "; ".join(parts) + ".\n"
    )
    for one, two in ((ONE, TWO), (BARE_ONE, BARE_TWO)):
        if one in cpu and two in cpu:
            text += (
                f"{two} over {one}: {median(speed[two]) / median(speed[one]):.2f}x of medians; their CPU seconds "
                f"{cpu[two] / cpu[one] - 1:+.0%} of one worker's; with both cores busy throughout, {cores} x one "
                f"worker's wall over the stages' CPU seconds bounds them at {cores * wall[one] / cpu[two]:.2f}x.\n"
            )
    return text


def stage_lines(stages: list[dict], one: dict | None) -> str:
    """The 2-stage runs' cut, decode split and CPU seconds per stage (thread CPU time, which other load does
    not inflate), and the bound they put on the speed-up: one worker's CPU seconds over the busiest stage's."""
    if not stages:
        return ""
    meta = stages[-1]
    cpu = [[w["compute_cpu_s"] + w["decode_cpu_s"] for w in m["workers"]] for m in stages]
    busiest = median([max(c) for c in cpu])
    costs = ", ".join(f"{c * 1000:.2f}" for c in meta["layer_costs_s"] or [])
    text = (
        f"Stage cut {meta['stage_boundaries']} from layer costs (ms per block, embed and head folded in) [{costs}] "
        f"and {meta['decode_s_per_block']:.3f} s to decode a block, each block's latent frames decoded per stage "
        f"{meta['decode_shares']}; CPU seconds per stage (model plus decode) in the 2-stage runs: "
        + "; ".join(", ".join(f"{v:.1f}" for v in c) for c in cpu)
    )
    if one:
        single = median([w["compute_cpu_s"] + w["decode_cpu_s"] for m in one for w in m["workers"]])
        text += (
            f"; one worker's: {single:.1f}. One worker's CPU seconds over the busiest stage's (medians), "
            f"{single / busiest:.2f}x, bounds what 2 stages gain on an idle machine."
        )
    return text + "\n"


def round_ratios(speed: dict[str, list[float]]) -> str:
    """Each round's ratios, 2 stages over that round's 1 worker and over that round's two renders at once: the
    machine's speed drifts between rounds, so a ratio within a round is steadier than a ratio of medians."""
    if not speed:
        return ""
    one, two, ceiling = speed[ONE], speed[TWO], speed[CEILING]
    over_one = [b / a for a, b in zip(one, two)]
    over_ceiling = [b / c for b, c in zip(two, ceiling)]
    return (
        "Per round, 2 stages over 1 worker: "
        + ", ".join(f"{r:.2f}x" for r in over_one)
        + f" (median {median(over_one):.2f}x); over the two renders at once: "
        + ", ".join(f"{r:.0%}" for r in over_ceiling)
        + f" (median {median(over_ceiling):.0%}).\n"
    )


def speed_only(
    args, command: str, rows: str, one: float, two: float, threads: float, ceiling: float, notes: str
) -> str:
    return f"""## Frame pipeline speed (DualParal): {model_name(args)}, {args.size}x{args.size}

{args.frames} frames in blocks of {args.block_frames}, {args.steps} steps per block, through the Ray pool;
frames/s over the whole render (denoise, VAE decode, MP4 writing), median of {args.repeats}
alternated runs after a warm-up.

{provenance(command)}
| configuration | frames/s (median) | vs 1 worker | runs |
|---|---|---|---|
{rows}

2 stages vs 1 worker: {two / one:.2f}x (target >= 1.8x at 256 frames, >= 1.5x at 64); 1 process with 2
threads: {threads / one:.2f}x; two 1-worker renders at once: {ceiling / one:.2f}x, the most any two workers get
from this machine's cores, of which 2 stages reach {two / ceiling:.0%}.
{notes}"""


def model_name(args: argparse.Namespace) -> str:
    """How the sections name the model."""
    if args.model == BUILTIN:
        return "built-in video model"
    return f"{family_for_dir(args.model).name} model {Path(args.model).name}"


def section(args: argparse.Namespace, name: str) -> str:
    """BENCHMARKS.md section ``name``, its family's own for a ``--model`` directory, a guided render's its own."""
    name = name if args.model == BUILTIN else f"{name}-{family_for_dir(args.model).name}"
    return f"{name}-guided" if args.guidance_scale > 1 else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BUILTIN, help="a local video pipeline directory (default: built-in)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="the job's guidance_scale")
    parser.add_argument("--context-frames", type=int, default=1, help="video frames of each neighbour block")
    parser.add_argument("--size", type=int, default=128, help="frame height and width in pixels")
    parser.add_argument("--frames", type=int, default=64, help="frames for the speed comparison")
    parser.add_argument("--block-frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-frames", type=int, nargs="*", default=[64, 256, 1024])
    args = parser.parse_args()
    import ray  # here, so that the bare (no Ray) stages import where Ray is not installed

    command = "python -m bench.frame_pipeline " + " ".join(sys.argv[1:])
    out = Path(tempfile.mkdtemp(prefix="tessera-bench-video-"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=300))
    counter = iter(range(1_000_000))

    def pool_fps(degree: int, frames: int) -> dict:
        spec = spec_for(args, frames, degree)
        return run_video_render(pool, spec, out / f"run-{next(counter)}.mp4", progress=False)

    metas: dict[int, list[dict]] = {1: [], 2: []}

    def timed(degree: int) -> float:
        meta = pool_fps(degree, args.frames)
        metas[degree].append(meta)
        return meta["frames_per_s"]

    def two_renders_fps() -> float:
        """Two independent 1-worker renders at once, one per worker: both videos' frames over the wall clock
        until both are written."""
        spec = spec_for(args, args.frames, 1)
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as both:
            done = list(both.map(
                lambda i: run_video_render(pool, spec, out / f"run-{next(counter)}.mp4", False, indices=[i]),
                range(2),
            ))
        return sum(meta["frames"] for meta in done) / (time.perf_counter() - started)

    usage: dict[str, list[tuple[float, float]]] = {}

    def metered(name: str, run):
        """``run`` with the machine's busy CPU seconds and the wall seconds around it appended to ``usage``."""

        def metered_run() -> float:
            value, busy, elapsed = measured(run)
            if machine_busy_seconds() is not None:  # no /proc/stat: nothing to report
                usage.setdefault(name, []).append((busy, elapsed))
            return value

        return metered_run

    runs = {
        ONE: metered(ONE, lambda: timed(1)),
        TWO: metered(TWO, lambda: timed(2)),
        "1 process x 2 threads": lambda: two_threads_fps(spec_for(args, args.frames, 1), out),
        CEILING: metered(CEILING, two_renders_fps),
        BARE_ONE: lambda: bare_fps(spec_for(args, args.frames, 1), out / f"run-{next(counter)}.mp4",
                                   usage.setdefault(BARE_ONE, [])),
        BARE_TWO: lambda: bare_fps(spec_for(args, args.frames, 2), out / f"run-{next(counter)}.mp4",
                                   usage.setdefault(BARE_TWO, [])),
    }
    try:
        branches = spec_for(args, args.frames, 2, cfg=True) if args.guidance_scale > 1 else None
    except SpecError:  # guidance embedded in the model (HunyuanVideo): one branch, nothing to split
        branches = None
    if branches is not None:
        runs[BRANCHES] = metered(BRANCHES, lambda: run_video_render(
            pool, branches, out / f"run-{next(counter)}.mp4", progress=False
        )["frames_per_s"])
    load_before = os.getloadavg()
    speed = alternate(runs, repeats=args.repeats) if args.repeats else {}
    load_after = os.getloadavg()
    skip = len(metas[2]) - args.repeats  # the warm-up's
    rounds_usage = {name: values[len(values) - args.repeats:] for name, values in usage.items()}  # the warm-up's dropped
    notes = stage_lines(metas[2][skip:], metas[1][skip:]) + round_ratios(speed) + usage_lines(rounds_usage, speed) + (
        f"Load average (1, 5, 15 min) on this machine before the runs {', '.join(f'{v:.1f}' for v in load_before)}, "
        f"after {', '.join(f'{v:.1f}' for v in load_after)}: other processes shared the cores.\n"
    )
    torch.set_num_threads(1)
    memory: dict[int, list[int]] = {}
    balance = cpu = None
    for frames in args.memory_frames:
        meta = pool_fps(2, frames)
        memory[frames] = [w["peak_memory_bytes"] for w in meta["workers"]]
        balance = [(w["layers"], round(w["compute_s"], 1), round(w["wait_s"], 1)) for w in meta["workers"]]
        cpu = [w["compute_cpu_s"] + w["decode_cpu_s"] for w in meta["workers"]]
        print(f"  memory at {frames} frames: {memory[frames]}", file=sys.stderr, flush=True)
    pool.shutdown()
    ray.shutdown()

    if not speed:  # --repeats 0: the memory figures only
        print(memory, balance)
        return
    one, two, threads, ceiling = (median(speed[k]) for k in (ONE, TWO, "1 process x 2 threads", CEILING))
    rows = "\n".join(
        f"| {name} | {median(values):.1f} | {median(values) / one:.2f}x | "
        + ", ".join(f"{v:.1f}" for v in values)
        + " |"
        for name, values in speed.items()
    )
    if not memory:  # --memory-frames with no lengths: the speed figures only, in their own section
        body = speed_only(args, command, rows, one, two, threads, ceiling, notes)
        write_section(section(args, f"frame-pipeline-speed-{args.frames}"), body)
        print(body)
        return
    mib = 2**20
    mem_rows = "\n".join(
        f"| {frames} | " + " | ".join(f"{b / mib:.0f}" for b in peaks) + " |"
        for frames, peaks in memory.items()
    )
    spread = [
        (max(col) - min(col)) / min(col) * 100 for col in zip(*memory.values())
    ]  # per worker, across lengths
    body = f"""## Frame pipeline (DualParal): {model_name(args)}, {args.size}x{args.size}

Layer-and-frame pipelining through the Ray pool: {args.frames} frames in blocks of {args.block_frames}, \
{args.steps} steps per block, context {args.context_frames} frame(s); frames/s over the whole render after \
set-up (denoise, VAE decode, MP4 writing), median of {args.repeats} alternated runs after a warm-up. \
Load average (1, 5, 15 min) before the runs {', '.join(f'{v:.1f}' for v in load_before)}, after \
{', '.join(f'{v:.1f}' for v in load_after)}; the ratios come from interleaved runs.

{provenance(command)}
| configuration | frames/s (median) | vs 1 worker | runs |
|---|---|---|---|
{rows}

2 stages vs 1 worker: {two / one:.2f}x (target >= 1.8x); 1 process with 2 threads: {threads / one:.2f}x; \
two 1-worker renders at once (the cores' ceiling for two workers): {ceiling / one:.2f}x. \
Stage cut, compute and wait seconds of the last memory run ({args.memory_frames[-1]} frames): {balance}.
The stages' CPU seconds there (model compute plus each stage's VAE decode, thread CPU time, which other load does
not inflate): {", ".join(f"{c:.1f}" for c in cpu)}; their sum over the busiest stage's, {sum(cpu) / max(cpu):.2f}x,
bounds what 2 stages can gain over 1 worker on an idle machine (ffmpeg's encoding runs in its own process).

Peak memory per worker (peak RSS in MiB, reset per job; 2 stages):

| frames | stage 0 | stage 1 |
|---|---|---|
{mem_rows}

Spread across lengths per worker: {", ".join(f"{s:.1f}%" for s in spread)} (target: within 10%).
"""
    write_section(section(args, "frame-pipeline"), body)
    print(body)


if __name__ == "__main__":
    main()
