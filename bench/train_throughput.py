"""UNet training throughput of the built-in model on Ray Train + DeepSpeed: 1 worker, 2-stage pipeline, 2-way DP,
and the 2-stage pipeline with online latents (a frozen VAE forward per micro-batch) with and without bubble
filling.

    .venv/bin/python -m bench.train_throughput --steps 12 --repeats 3
    .venv/bin/python -m bench.train_throughput --only online   # the bubble-filling rows alone

Each configuration is a real `tessera train` job (VAE phase skipped, UNet phase only) on local Ray; the
configurations alternate (A, B, C, A, ...) and the figure is the median over repeats of the median
samples/s of a run's steps after the first two (profiling, cache and DeepSpeed warm-up). One worker is
one process with one torch thread. Writes the "train-throughput" section of BENCHMARKS.md (or --section).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile

import ray

from bench.common import alternate, median, provenance, write_section
from cluster.train import run_training
from runtime.training.config import TrainConfig, UnetStage, VaeStage

# name: (workers, stages, latents, bubble filling, niceness of the filling thread)
CONFIGS = {
    "1 worker": (1, 1, "cache", False, 0),
    "2-stage pipeline": (2, 2, "cache", False, 0),
    "2-worker data parallel": (2, 1, "cache", False, 0),
    "2-stage pipeline, online latents": (2, 2, "online", False, 0),
    "2-stage + bubble filling, online latents": (2, 2, "online", True, 10),
    "2-stage + bubble filling (filler at nice 0), online latents": (2, 2, "online", True, 0),
}
FROZEN_SHARES: dict[str, list[float]] = {}
"""Per run: median share of a step's wall time the first stage spent on frozen work (frozen_s / step)."""


def measure(name: str, steps: int, micro_batches: int) -> float:
    workers, stages, latents, bubble_filling, nice = CONFIGS[name]
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(
            workers=workers,
            stages=stages,
            device="cpu",
            run_dir=run_dir,
            progress=False,
            checkpoint_every=10**6,
            vae=VaeStage(steps=0),
            unet=UnetStage(
                steps=steps,
                micro_batch=8,
                micro_batches=micro_batches,
                cache_size=64,
                latents=latents,
                bubble_filling=bubble_filling,
                bubble_filling_nice=nice,
            ),
        )
        records = run_training(config)
    samples = 8 * micro_batches * (workers // stages)
    shares = [r["frozen_s"] * r["samples_per_s"] / samples for r in records[2:]]
    FROZEN_SHARES.setdefault(name, []).append(statistics.median(shares))
    return statistics.median(r["samples_per_s"] for r in records[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the configurations whose name contains this")
    parser.add_argument("--section", default="train-throughput", help="the BENCHMARKS.md section to write")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        runs = {
            name: (lambda name=name: measure(name, args.steps, args.micro_batches))
            for name in CONFIGS
            if args.only in name
        }
        results = alternate(runs, repeats=args.repeats, warmup=0)
    finally:
        ray.shutdown()
    base_name = next(iter(results))
    base = median(results[base_name])
    rows = [
        f"| {name} | {median(values):.1f} | {median(values) / base:.2f}x | "
        f"{median(FROZEN_SHARES[name]):.0%} | {', '.join(f'{v:.1f}' for v in values)} |"
        for name, values in results.items()
    ]
    body = (
        "## UNet training throughput (built-in image model, 128 px, micro-batch 8 x "
        f"{args.micro_batches})\n\n"
        + provenance(" ".join(["python -m bench.train_throughput", *sys.argv[1:]]))
        + f"\n| configuration | samples/s (median) | vs {base_name} | frozen share of a step | per run |\n"
        + "|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nOnline latents: fresh procedural images, random flips and a frozen VAE encoder forward per "
        "micro-batch (`unet.latents=online`); with `parallel.bubble_filling=true` the first stage computes "
        "them in a background thread of lower OS priority, ahead by up to one step's micro-batches, so they run "
        "while the stage waits on its neighbour (1F1B warm-up/cool-down) or on a core the other stage leaves "
        "idle. Frozen share: the first stage's seconds on that work per step over the step's wall time; in "
        "series (no filling) it is the share bubble filling can take off the critical path; when filling it "
        "is the filler thread's wall time, waits for a CPU included, and can exceed 100% since the thread "
        "runs ahead into the next step. The machine is shared with other engineers' jobs: per-run figures "
        "vary widely, compare ratios within a round.\n"
    )
    write_section(args.section, body)
    print(body)


if __name__ == "__main__":
    main()
