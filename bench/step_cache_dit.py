"""Step caching on a Flux-layout transformer: Tessera's First Block Cache (diffusers' hooks, the decision summed over
the job's group) against full compute and against diffusers' own First Block Cache, on one worker; and composed
with 2-worker displaced patch bands.

    python -m bench.step_cache_dit --size 512 --steps 20 --repeats 3 --warmup 1

The model is ``bench.image_dit_strategies``' Flux layout (random weights, seed 0, float32, eval: 2 double- and 4
single-stream blocks, 4 heads x 128, FLUX.1's text widths and 512 text tokens), denoising one latent with the Flux
family's flow-matching Euler loop. Rows, run in alternating rounds (``bench.common.alternate``):

- ``1 worker``: full compute, one torch thread (the analogue of one GPU); every other row is measured against it;
- ``first-block <threshold>``: ``parallel.cache.first_block`` at each ``--thresholds`` value (warm-up 2 steps,
  max 3 reused steps in a row: the ``cache=first-block`` defaults);
- ``diffusers first-block <threshold>``: ``diffusers.hooks.apply_first_block_cache`` at the same thresholds (its
  own test, no warm-up or cap), the model called in a ``cache_context`` as diffusers' pipelines do;
- ``bands displaced 2`` and ``bands displaced 2 + first-block <threshold>``: two worker processes of one thread
  over a gloo group with the CLI's patch defaults, without and with the cache at ``--composed-threshold``;
- ``1 process x 2 threads``: the other CPU baseline.

Each figure is the seconds of the whole loop (a cache's gain spans every step), the median over ``--repeats``
rounds after ``--warmup``; the 2-worker rows take the slowest worker. PSNR is of the final latent against the full-
compute one, ``20 log10(peak / RMSE)`` with the reference's value range as peak. The model has random weights: its
trajectory changes faster from step to step than a trained model's, so a threshold reuses fewer steps than on
FLUX.1 at the same quality; the figures are this layout's, not FLUX.1-dev's.

Writes the "step-cache-dit" section of BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

from bench.common import alternate, median, provenance, write_section
from bench.image_dit_strategies import MODELS, BenchConfig, patch_defaults, psnr
from bench.strategy_workers import Run, Timed, WorkerPool
from parallel.cache.calibrate import calibrate
from parallel.cache.config import CacheConfig
from parallel.cache.first_block import apply_first_block_cache as tessera_first_block
from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.parallelize import parallelize_patch
from parallel.steps import ReuseThenPredict
from pipelines.sampling import batched_cfg_predictor

WORKERS = 2


def cached_loop(predict, noise: torch.Tensor, scheduler, cache=None, context=None) -> torch.Tensor:
    """The flow-matching loop, telling ``cache`` (a Tessera step cache) each step or running every call in
    ``context`` (diffusers' cache context)."""
    with torch.no_grad():
        for step, t in enumerate(scheduler.timesteps):
            if cache is not None:
                cache.begin_step(step)
            if context is not None:
                with context("cond"):
                    noise_pred = predict(noise, t)
            else:
                noise_pred = predict(noise, t)
            if cache is not None:
                cache.end_step()
            noise = scheduler.step(noise_pred, t, noise, return_dict=False)[0]
    return noise


def _cache_config(threshold: float) -> CacheConfig:
    return CacheConfig(mode="first-block", threshold=threshold)


def setup_worker(rank: int, world: int, cfg: BenchConfig, threshold: float) -> tuple[dict[str, Run], str]:
    """Displaced bands without and with the cache on this worker."""
    bench = MODELS["flux"]
    group = dist.group.WORLD
    model = bench.build(cfg)
    config = cfg.patch("displaced")
    handle = parallelize_patch(model, group, bench.family.patch_plan(model, config), config)
    noise = bench.latent(model, cfg)
    bounds = band_bounds(noise.shape[-2], world, bench.family.patch_plan(model, config).align)
    predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, False))
    scheduler = bench.scheduler_factory(model, cfg)

    def run(cached: bool) -> Timed:
        handle.reset()
        before = _sent(handle.bytes_sent.total)
        cache = tessera_first_block(model, _cache_config(threshold), first_step=0) if cached else None
        started = time.perf_counter()
        band = slice_band(noise, bounds, rank).contiguous()
        out = gather_bands(cached_loop(predict, band, scheduler(), cache), group, bounds)
        seconds = time.perf_counter() - started
        reused = len(cache.report()["reused_steps"]) if cache is not None else 0
        if cache is not None:
            cache.close()
        sent = (_sent(handle.bytes_sent.total) - before) / cfg.steps
        return Timed({"loop_s": seconds, "reused": reused, "sent": sent}, out)

    plain = bench.build(cfg)  # ParaStep's own copy, without the bands' processors
    steps = ReuseThenPredict(batched_cfg_predictor(plain, bench.conditioning(plain, cfg, False)), group, warmup_steps=2)

    def run_steps() -> Timed:
        before = _sent(steps.comm.bytes_sent().total)
        started = time.perf_counter()
        out = parastep_loop(steps, noise, scheduler())
        seconds = time.perf_counter() - started
        return Timed({"loop_s": seconds, "reused": 0, "sent": (_sent(steps.comm.bytes_sent().total) - before) / cfg.steps}, out)

    return {"bands": lambda: run(False), "bands cached": lambda: run(True), "steps": run_steps}, ""


def _sent(total: dict[str, dict[int, int]]) -> int:
    return sum(n for peers in total.values() for n in peers.values())


class _Loop:
    """What ``ReuseThenPredict`` reads of a denoising loop."""

    def __init__(self, scheduler, latents: torch.Tensor) -> None:
        self.scheduler, self.timesteps, self.latents = scheduler, scheduler.timesteps, latents
        self.step_index, self.step_kwargs = 0, {}


def parastep_loop(steps: ReuseThenPredict, noise: torch.Tensor, scheduler) -> torch.Tensor:
    """The flow-matching loop with ParaStep's predictor (rounds of the group's size after 2 warm-up steps)."""
    loop = _Loop(scheduler, noise)
    steps.bind(loop)
    steps.pending, steps.last_noise = {}, None
    with torch.no_grad():
        for index, t in enumerate(scheduler.timesteps):
            loop.step_index = index
            noise_pred = steps(loop.latents, t)
            loop.latents = scheduler.step(noise_pred, t, loop.latents, return_dict=False)[0]
    return loop.latents


def calibrated_threshold(cfg: BenchConfig, min_psnr: float) -> tuple[float | None, dict]:
    """The threshold ``parallel.cache.calibrate`` picks for ``min_psnr`` on one worker (as a ``cache.min_psnr`` job's
    first run does), and the calibration's record."""
    torch.set_num_threads(1)
    bench = MODELS["flux"]
    model = bench.build(cfg)
    noise = bench.latent(model, cfg)
    scheduler = bench.scheduler_factory(model, cfg)
    predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, False))

    def render(config: CacheConfig):
        cache = tessera_first_block(model, config, first_step=0) if config.enabled else None
        try:
            return cached_loop(predict, noise, scheduler(), cache), cache.report() if cache else {}
        finally:
            if cache is not None:
                cache.close()

    found = calibrate(render, CacheConfig(mode="first-block"), cfg.steps, min_psnr)
    return found.value, found.as_dict()


def measure(cfg: BenchConfig, thresholds: list[float], composed: float, repeats: int, warmup: int) -> dict:
    torch.set_num_threads(1)
    bench = MODELS["flux"]
    model = bench.build(cfg)
    noise = bench.latent(model, cfg)
    scheduler = bench.scheduler_factory(model, cfg)
    predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, False))
    outputs: dict[str, torch.Tensor] = {}
    reused: dict[str, int] = {}
    sent: dict[str, float] = {}

    def single(name: str, threads: int = 1, threshold: float | None = None, ours: bool = True) -> Callable[[], float]:
        def run() -> float:
            torch.set_num_threads(threads)
            cache = context = None
            if threshold is not None and ours:
                cache = tessera_first_block(model, _cache_config(threshold), first_step=0)
            elif threshold is not None:
                apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
                context = model.cache_context
            try:
                started = time.perf_counter()
                outputs[name] = cached_loop(predict, noise, scheduler(), cache, context)
                seconds = time.perf_counter() - started
            finally:
                torch.set_num_threads(1)
                if cache is not None:
                    reused[name] = len(cache.report()["reused_steps"])
                    cache.close()
                if context is not None:
                    model._diffusers_hook.remove_hook("fbc_leader_block_hook", recurse=True)
                    model._diffusers_hook.remove_hook("fbc_block_hook", recurse=True)
            return seconds

        return run

    with WorkerPool(WORKERS, setup_worker, (cfg, composed)) as pool:

        def parallel(name: str, command: str) -> Callable[[], float]:
            def run() -> float:
                timed = pool.run(command)
                outputs[name] = timed.output
                sent[name] = timed.figures["sent"]
                if command == "bands cached":
                    reused[name] = int(timed.figures["reused"])
                return timed.figures["loop_s"]

            return run

        runs = {"1 worker": single("1 worker")}
        for threshold in thresholds:
            runs[f"first-block {threshold:g}"] = single(f"first-block {threshold:g}", threshold=threshold)
            runs[f"diffusers first-block {threshold:g}"] = single(
                f"diffusers first-block {threshold:g}", threshold=threshold, ours=False
            )
        runs[f"bands displaced {WORKERS}"] = parallel(f"bands displaced {WORKERS}", "bands")
        runs[f"bands displaced {WORKERS} + first-block {composed:g}"] = parallel(
            f"bands displaced {WORKERS} + first-block {composed:g}", "bands cached"
        )
        runs[f"steps {WORKERS} (ParaStep)"] = parallel(f"steps {WORKERS} (ParaStep)", "steps")
        runs["1 process x 2 threads"] = single("1 process x 2 threads", threads=2)
        seconds = alternate(runs, repeats, warmup)
    return {"seconds": seconds, "outputs": outputs, "reused": reused, "sent": sent}


def section(cfg: BenchConfig, measured: dict, command: str, args: argparse.Namespace) -> str:
    seconds, outputs, reused, sent = measured["seconds"], measured["outputs"], measured["reused"], measured["sent"]
    base = median(seconds["1 worker"])
    lines = [
        "| configuration | s per loop (median) | speed-up vs 1 worker | steps reused | PSNR vs full compute (dB) "
        "| MiB sent per step per worker |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in seconds.items():
        quality = psnr(outputs[name], outputs["1 worker"])
        shown = "exact" if math.isinf(quality) else f"{quality:.1f}"
        steps = f"{reused[name]} of {cfg.steps}" if name in reused else "-"
        mib = f"{sent[name] / 2**20:.2f}" if name in sent else "-"
        lines.append(f"| {name} | {median(values):.2f} | {base / median(values):.2f}x | {steps} | {shown} | {mib} |")
    for name in seconds:
        if "first-block" in name:
            lines.append(f"\nPer round, {name}: " + ", ".join(f"{s:.2f}" for s in seconds[name]) + " s")
    image_tokens = (cfg.size // 16) ** 2
    return (
        "## Step caching: First Block Cache on a Flux-layout transformer\n\n"
        + provenance(command)
        + f"- model: {MODELS['flux'].describe(cfg)}, float32, random weights (seed 0), eval\n"
        f"- image {cfg.size}x{cfg.size}: {image_tokens} image tokens + {cfg.text_tokens} text tokens; {cfg.steps} "
        "flow-matching Euler steps; seconds of the whole loop, median of "
        f"{args.repeats} alternating rounds after {args.warmup} warm-up; PSNR of the final latent against `1 worker`\n"
        "- Tessera's cache: warm-up 2 steps, at most 3 reused in a row; diffusers': its own hook, no warm-up or cap\n"
        f"- bands: {WORKERS} gloo workers, displaced, the CLI's patch defaults; ParaStep (`parallel=steps`): the same "
        "workers, 2 warm-up steps, then rounds of 2 adjacent steps, only the noise exchanged\n\n" + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--thresholds", default="0.05,0.1,0.2", help="comma-separated first-block thresholds")
    ap.add_argument("--composed-threshold", type=float, default=0.1)
    ap.add_argument(
        "--min-psnr",
        type=float,
        help="instead of --thresholds / --composed-threshold: the threshold cache.min_psnr calibrates on one worker",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    bench = MODELS["flux"]
    cfg = BenchConfig(model="flux", text_tokens=bench.text_tokens(), **bench.defaults, **patch_defaults())
    cfg = BenchConfig(**{**cfg.__dict__, "size": args.size, "steps": args.steps})
    bench.check(cfg)
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    composed, calibration = args.composed_threshold, None
    if args.min_psnr is not None:
        threshold, calibration = calibrated_threshold(cfg, args.min_psnr)
        print(f"calibration: {calibration}", file=sys.stderr, flush=True)
        if threshold is None:
            raise SystemExit(f"--min-psnr: no threshold keeps {args.min_psnr} dB on this model ({calibration})")
        thresholds, composed = [threshold], threshold
    measured = measure(cfg, thresholds, composed, args.repeats, args.warmup)
    command = "python -m bench.step_cache_dit " + " ".join(argv if argv is not None else sys.argv[1:])
    body = section(cfg, measured, command, args)
    if calibration is not None:
        body += (
            f"\nThreshold from `cache.min_psnr={args.min_psnr:g}` calibrated on one worker (not timed): "
            f"{calibration['value']:.4g}, {calibration['psnr']:.1f} dB in calibration, {calibration['renders']} renders.\n"
        )
    if args.no_write:
        print(body)
    else:
        write_section("step-cache-dit", body)
    return body


if __name__ == "__main__":
    main()
