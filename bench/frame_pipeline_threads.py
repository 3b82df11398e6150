"""Where the CPU goes in a frame-pipelined render: per thread, 1 worker against 2 stages, without Ray.

    .venv/bin/python -m bench.frame_pipeline_threads --frames 256 --repeats 3

``bench.frame_pipeline`` measures the speed-up; this says what bounds it on a machine with as many cores as stages.
The renders are ``bench.frame_pipeline.bare_stage``'s (spawned processes set up as pool workers are, a gloo group on
loopback), alternated; around the measured render each process reads, from ``/proc/self/task``, every thread's CPU
seconds (user + system), system seconds, minor page faults and involuntary context switches (the thread was
preempted), and its children's CPU seconds (the MP4 encoder, ffmpeg). A 1-worker render gets the second core for its
encoder; 2 stages share both cores with it and with gloo's I/O threads, so the stages' speed-up is bounded by one
worker's wall seconds over half of everything the 2-stage render costs. Writes the "frame-pipeline-threads" section
of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch.distributed as dist

from bench.common import environment, median, provenance, spawn_ranks, write_section

TICK = os.sysconf("SC_CLK_TCK")


def thread_usage() -> dict[str, list[float]]:
    """{thread name: [CPU s, system s, minor faults, involuntary switches]}, summed over the threads of each name."""
    usage: dict[str, list[float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            status = Path(f"/proc/self/task/{tid}/status").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        switches = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        row = [(int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK, int(fields[7]), switches]
        usage[name] = [a + b for a, b in zip(usage.get(name, [0.0] * 4), row)]
    return usage


def children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def counted_stage(rank: int, world: int, spec, video: str, drop: bool, port: int, queue) -> None:
    """``bare_stage``'s render with each thread's usage over the measured render on ``queue``: (rank, wall seconds,
    {thread: usage}, children's CPU seconds)."""
    from bench.frame_pipeline import bare_setup, rendered
    from runtime.jobs.video_session import open_video_session

    pipe, warm = bare_setup(rank, world, spec, port)
    for run, path in ((warm, f"{video}.warm.mp4"), (spec, video)):
        session = open_video_session(pipe, run, video_path=path)
        if world > 1:
            dist.barrier()
        before, children, started = thread_usage(), children_cpu(), time.perf_counter()
        rendered(session)
        wall = time.perf_counter() - started
        after, children = thread_usage(), children_cpu() - children
    delta = {name: [a - b for a, b in zip(row, before.get(name, [0.0] * 4))] for name, row in after.items()}
    queue.put((rank, wall, {name: row for name, row in delta.items() if row[0] > 0.005}, children))
    if world > 1:
        dist.destroy_process_group()


def measure(spec, video: Path) -> list[tuple]:
    from runtime.heap import worker_env

    with environment(worker_env("cpu", {})):
        return spawn_ranks(counted_stage, spec.parallel.degree, spec.placed(spec.model, spec.parallel.degree), str(video), False)


def table(runs: dict[str, list[list[tuple]]]) -> str:
    """Medians over the rounds, per configuration and rank: wall, threads' CPU seconds by name, ffmpeg."""
    lines = [
        "| configuration | stage | wall s | main and other threads CPU s (system) | gloo I/O threads CPU s | minor faults | "
        "preemptions | encoder (ffmpeg) CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rounds in runs.items():
        for rank in range(len(rounds[0])):
            rows = [r[rank] for r in rounds]

            def med(pick, rows=rows) -> float:
                return median([pick(row) for row in rows])

            def main(i: int) -> float:
                return med(lambda row, i=i: sum(u[i] for t, u in row[2].items() if not t.startswith("gloo")))

            gloo = med(lambda row: sum(u[0] for t, u in row[2].items() if t.startswith("gloo")))
            lines.append(
                f"| {name} | {rank} | {med(lambda row: row[1]):.2f} | {main(0):.2f} ({main(1):.2f}) | {gloo:.2f} | "
                f"{main(2):,.0f} | {main(3):,.0f} | {med(lambda row: row[3]):.2f} |"
            )
    return "\n".join(lines) + "\n"


def bound(runs: dict[str, list[list[tuple]]]) -> str:
    one = median([r[0][1] for r in runs["1 worker"]])
    total = median([sum(sum(u[0] for u in rank[2].values()) + rank[3] for rank in r) for r in runs["2 stages"]])
    single = median([sum(u[0] for u in r[0][2].values()) + r[0][3] for r in runs["1 worker"]])
    walls = median([r[0][1] for r in runs["2 stages"]])
    return (
        f"Every thread and the encoder together: one worker's render {single:.2f} CPU s in {one:.2f} s, the 2 stages' "
        f"{total:.2f} CPU s in {walls:.2f} s (medians). With both cores busy throughout, one worker's wall over half the "
        f"stages' CPU seconds bounds the speed-up at {one / (total / 2):.2f}x; measured, {one / walls:.2f}x of the medians.\n"
    )


def main() -> None:
    from bench.frame_pipeline import BUILTIN, spec_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = argparse.Namespace(
        model=BUILTIN, guidance_scale=1.0, context_frames=1, size=args.size, block_frames=8, steps=10
    )
    out = Path(tempfile.mkdtemp(prefix="tessera-bench-threads-"))
    runs: dict[str, list[list[tuple]]] = {"1 worker": [], "2 stages": []}
    for round_index in range(args.repeats):
        for name, degree in (("1 worker", 1), ("2 stages", 2)):
            got = measure(spec_for(shape, args.frames, degree), out / f"{degree}-{round_index}.mp4")
            runs[name].append(got)
            print(f"  round {round_index + 1} {name}: wall {got[0][1]:.2f} s", flush=True)
    body = (
        f"## Frame pipeline: where the CPU goes, per thread (built-in video model, {args.size}x{args.size})\n\n"
        f"{args.frames} frames in blocks of 8, 10 steps, without Ray (spawned processes set up as pool workers), 1 worker "
        f"and 2 stages alternated, {args.repeats} rounds; medians. Per process, over the measured render: each thread's "
        "CPU seconds (`/proc/self/task`, user + system; the main thread runs the model, the VAE and the ring's calls; "
        "gloo's I/O threads move the messages), "
        "its minor page faults and the times it was preempted (involuntary context switches), and the children's CPU "
        "seconds (stage 0's MP4 encoder).\n\n"
        + provenance("python -m bench.frame_pipeline_threads " + " ".join(sys.argv[1:]))
        + "\n"
        + table(runs)
        + "\n"
        + bound(runs)
    )
    write_section("frame-pipeline-threads", body)
    print(body)


if __name__ == "__main__":
    main()
