"""UNet training throughput of the built-in model on Ray Train + DeepSpeed: 1 worker, 2-stage pipeline, 2-way DP.

    .venv/bin/python -m bench.train_throughput --steps 12 --repeats 3

Each configuration is a real `tessera train` job (VAE phase skipped, UNet phase only) on local Ray; the
configurations alternate (A, B, C, A, ...) and the figure is the median over repeats of the median
samples/s of a run's steps after the first two (profiling, cache and DeepSpeed warm-up). One worker is
one process with one torch thread. Writes the "train-throughput" section of BENCHMARKS.md.
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
from runtime.train_config import TrainConfig, UnetStage, VaeStage

CONFIGS = {"1 worker": (1, 1), "2-stage pipeline": (2, 2), "2-worker data parallel": (2, 1)}


def measure(workers: int, stages: int, steps: int, micro_batches: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(
            workers=workers, stages=stages, device="cpu", run_dir=run_dir, progress=False,
            checkpoint_every=10**6, vae=VaeStage(steps=0),
            unet=UnetStage(steps=steps, micro_batch=8, micro_batches=micro_batches, cache_size=64),
        )
        records = run_training(config)
    return statistics.median(r["samples_per_s"] for r in records[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        runs = {
            name: (lambda w=w, s=s: measure(w, s, args.steps, args.micro_batches))
            for name, (w, s) in CONFIGS.items()
        }
        results = alternate(runs, repeats=args.repeats, warmup=0)
    finally:
        ray.shutdown()
    base = median(results["1 worker"])
    rows = [
        f"| {name} | {median(values):.1f} | {median(values) / base:.2f}x | {', '.join(f'{v:.1f}' for v in values)} |"
        for name, values in results.items()
    ]
    body = (
        "## UNet training throughput (built-in image model, 128 px, micro-batch 8 x "
        f"{args.micro_batches})\n\n"
        + provenance(" ".join(["python -m bench.train_throughput", *sys.argv[1:]]))
        + "\n| configuration | samples/s (median) | vs 1 worker | per run |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nBubble filling (frozen work in the pipeline's idle slots) is not implemented yet: no row for it.\n"
    )
    write_section("train-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
