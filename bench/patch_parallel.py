"""Patch parallelism on the built-in model: 1 vs 2 workers of one thread, sync and displaced.

    .venv/bin/python -m bench.patch_parallel --size 1024 --steps 8 --repeats 5

Runs through the real Ray pool and gloo groups, alternating the configurations (A, B, C, D, E, A, ...),
and reports the median seconds per steady-state step (steps after the displaced warmup), the bytes
each worker sends per step (measured, and computed for an all-gather scheme like distrifuser's at 2, 4
and 8 workers), per-worker peak memory, and the PSNR of each mode's image against one worker's.
Writes the "patch-parallel" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

import numpy as np
import ray
import torch

from bench.common import alternate, median, provenance, write_section
from cluster.jobs.image import ParallelSpec, RenderSpec
from parallel.patch.traffic import patch_bytes_per_worker, record_patch_layers
from pipelines.loading import load_pipeline
from pipelines.sampling import DenoiseLoop, batched_cfg_predictor, encode_conditioning
from runtime.jobs.image import run_render
from runtime.pool import DevicePool, PoolConfig

PROMPT = "red and white stripes"


def spec_for(size: int, steps: int, warmup: int, **parallel: object) -> RenderSpec:
    """The benchmark's render at ``size`` px; ``parallel``: ``ParallelSpec`` fields besides the warmup."""
    spec = RenderSpec(
        prompt=PROMPT,
        height=size,
        width=size,
        steps=steps,
        seed=7,
        guidance_scale=5.0,
        parallel=ParallelSpec(warmup_steps=warmup, **parallel),
    )
    spec.validate()
    return spec


def steady_step_s(step_s: list[float], warmup: int) -> float:
    return median(step_s[warmup:])


def two_thread_step_s(spec: RenderSpec, warmup: int) -> float:
    """The honest CPU baseline: one process (this one) using both cores."""
    torch.set_num_threads(2)
    pipe = load_pipeline(spec.model_path())
    cond = encode_conditioning(pipe, spec.prompt, "", spec.guidance_scale, "cpu")
    loop = DenoiseLoop(
        pipe,
        spec.sampler,
        spec.steps,
        spec.seed,
        spec.height,
        spec.width,
        batched_cfg_predictor(pipe.unet, cond),
    )
    times = []
    while not loop.done:
        started = time.perf_counter()
        loop.step()
        times.append(time.perf_counter() - started)
    return steady_step_s(times, warmup)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def computed_traffic(spec: RenderSpec) -> dict[int, dict[str, dict[str, float]]]:
    pipe = load_pipeline(spec.model_path())
    latent = torch.randn(2, 4, spec.height // 8, spec.width // 8)
    text = torch.randn(2, 77, pipe.text_encoder.config.hidden_size)
    shapes = record_patch_layers(pipe.unet, lambda: pipe.unet(latent, 500, encoder_hidden_states=text))
    return {
        n: {
            "neighbour": patch_bytes_per_worker(shapes, n, "neighbour"),
            "allgather": patch_bytes_per_worker(shapes, n, "allgather"),
            "inputs": patch_bytes_per_worker(shapes, n, "neighbour", kv_source="input"),
        }
        for n in (2, 4, 8)
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    size, steps, warmup = args.size, args.steps, args.warmup_steps
    command = "python -m bench.patch_parallel " + " ".join(sys.argv[1:])
    one = spec_for(size, steps, warmup)
    sync = spec_for(size, steps, warmup, strategy="patch", degree=2, mode="sync")
    displaced = spec_for(size, steps, warmup, strategy="patch", degree=2, mode="displaced")
    displaced16 = spec_for(size, steps, warmup, strategy="patch", degree=2, mode="displaced", stale_dtype="float16")
    displaced16in = spec_for(
        size, steps, warmup, strategy="patch", degree=2, mode="displaced", stale_dtype="float16", kv_source="input"
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    pool = DevicePool(PoolConfig(workers=2, device="cpu"))
    last: dict[str, dict] = {}

    def through_pool(name: str, spec: RenderSpec):
        def run() -> float:
            result = run_render(pool, spec, progress=False, decode=False)
            last[name] = result.metadata
            return steady_step_s(result.metadata["timings"]["step_s"], warmup)

        return run

    runs = {
        "1 worker x 1 thread": through_pool("one", one),
        "2 workers, sync": through_pool("sync", sync),
        "2 workers, displaced": through_pool("displaced", displaced),
        "2 workers, displaced, float16 stale": through_pool("displaced16", displaced16),
        "2 workers, displaced, float16 stale, inputs exchanged": through_pool("displaced16in", displaced16in),
        "1 process x 2 threads": lambda: two_thread_step_s(one, warmup),
    }
    times = alternate(runs, repeats=args.repeats, warmup=1)
    torch.set_num_threads(1)
    modes = (
        ("one", one),
        ("sync", sync),
        ("displaced", displaced),
        ("displaced16", displaced16),
        ("displaced16in", displaced16in),
    )
    images = {name: run_render(pool, spec, progress=False).image for name, spec in modes}
    pool.shutdown()
    # memory on fresh workers: a reused worker's RSS keeps what glibc freed but did not return
    for name, spec in modes:
        with DevicePool(PoolConfig(workers=2, device="cpu")) as fresh:
            last[name] = run_render(fresh, spec, progress=False, decode=False).metadata
    ray.shutdown()
    traffic = computed_traffic(one)

    base = median(times["1 worker x 1 thread"])
    lines = [
        f"## Patch parallelism (built-in image model, {size}x{size}, {steps} DDIM steps, CFG 5.0)",
        "",
        provenance(command),
        f"Median seconds per step over steps {warmup + 1}..{steps} (the displaced warmup excluded for all), "
        f"{args.repeats} alternating rounds after one warm-up round.",
        "",
        "| configuration | s/step (median) | all runs | speedup vs 1 worker |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        m = median(values)
        lines.append(f"| {name} | {m:.3f} | {', '.join(f'{v:.3f}' for v in values)} | {base / m:.2f}x |")
    lines += [
        "",
        "Per worker (one render on freshly started workers; activation peak = peak RSS minus RSS after loading):",
        "",
        "| mode | worker | rows | MB sent/step | peak RSS MB | activation peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, _ in modes:
        for w in last[name]["workers"]:
            sent = w.get("bytes_sent_per_step", 0) / 1e6
            lines.append(
                f"| {name} | {w['band']} | {w['rows'][0]}-{w['rows'][1]} | {sent:.2f} | "
                f"{w['peak_memory_bytes'] / 2**20:.0f} | {w['activation_peak_bytes'] / 2**20:.0f} |"
            )
    lines += [
        "",
        "Bytes one worker sends per step, computed from the model's layer shapes "
        "(`parallel/patch/traffic.py`), ours (halos to the two neighbours) vs an all-gather scheme:",
        "",
        "| workers | halo, ours MB | halo, all-gather MB | ratio | K/V MB (both) | attention inputs MB "
        "(`kv_source=input`) | GroupNorm KB (both) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, schemes in traffic.items():
        ours, ag = schemes["neighbour"], schemes["allgather"]
        lines.append(
            f"| {n} | {ours['halo'] / 1e6:.2f} | {ag['halo'] / 1e6:.2f} | {ours['halo'] / ag['halo']:.2f} | "
            f"{ours['kv'] / 1e6:.2f} | {schemes['inputs']['kv'] / 1e6:.2f} | {ours['norm'] / 1e3:.1f} |"
        )
    lines += [
        "",
        f"PSNR against the one-worker image: sync {psnr(images['sync'], images['one']):.1f} dB, "
        f"displaced {psnr(images['displaced'], images['one']):.1f} dB, displaced with float16 stale activations "
        f"{psnr(images['displaced16'], images['one']):.1f} dB, and with the attention inputs exchanged "
        f"{psnr(images['displaced16in'], images['one']):.1f} dB.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("patch-parallel", body)


if __name__ == "__main__":
    main()
