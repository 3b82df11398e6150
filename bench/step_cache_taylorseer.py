"""TaylorSeer on a Flux-layout transformer: Tessera's ``cache.mode=taylorseer`` against full compute and against
diffusers' own TaylorSeer hooks, on one worker; and composed with 2-worker displaced patch bands.

    python -m bench.step_cache_taylorseer --size 512 --steps 20 --repeats 3 --warmup 1

The model is ``bench.image_dit_strategies``' Flux layout (random weights, seed 0, float32, eval), denoising one
latent with the Flux family's flow-matching Euler loop (``bench.step_cache_dit.cached_loop``). Rows, run in
alternating rounds (``bench.common.alternate``):

- ``1 worker``: full compute, one torch thread (the analogue of one GPU); every other row is measured against it;
- ``taylorseer i<interval> o<order>``: ``parallel.cache.taylorseer`` (warm-up 2 steps, then a full step every
  ``interval``; a predicted step runs nothing);
- ``diffusers taylorseer i<interval> o<order>``: ``diffusers.hooks.apply_taylorseer_cache`` on the same model, its
  default hooks (every attention module predicted, the rest of each block computed), ``disable_cache_before_step``
  2, float32 factors; and ``diffusers taylorseer lite``: its lite mode (blocks return zeros, ``proj_out``
  predicted). Its own schedule computes at steps ``< 2`` and every ``interval``-th from step 3, one step later than
  Tessera's; the steps each row predicted are in the table;
- ``bands displaced 2`` and ``bands displaced 2 + taylorseer i<interval> o<order>``: two worker processes of one
  thread over a gloo group with the CLI's patch defaults, without and with the cache at ``--composed``;
- ``1 process x 2 threads``: the other CPU baseline.

Each figure is the seconds of the whole loop, the median over ``--repeats`` rounds after ``--warmup``; the 2-worker
rows take the slowest worker. PSNR is of the final latent against the full-compute one (``bench.image_dit_strategies.
psnr``). Random weights: the trajectory changes faster than a trained model's, so the PSNR at an interval is this
layout's, not FLUX.1-dev's.

Writes the "step-cache-taylorseer" section of BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

from bench.common import alternate, median, provenance, write_section
from bench.image_dit_strategies import MODELS, BenchConfig, patch_defaults, psnr
from bench.step_cache_dit import WORKERS, _sent, cached_loop
from bench.strategy_workers import Run, Timed, WorkerPool
from parallel.cache.config import CacheConfig
from parallel.cache.taylorseer import apply_taylorseer
from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.parallelize import parallelize_patch
from pipelines.sampling import batched_cfg_predictor

WARMUP_STEPS = 2


def _config(interval: int, order: int) -> CacheConfig:
    return CacheConfig(mode="taylorseer", interval=interval, order=order, warmup_steps=WARMUP_STEPS)


def _label(interval: int, order: int) -> str:
    return f"i{interval} o{order}"


def setup_worker(rank: int, world: int, cfg: BenchConfig, composed: tuple[int, int]) -> tuple[dict[str, Run], str]:
    """Displaced bands without and with TaylorSeer on this worker."""
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
        cache = apply_taylorseer(_config(*composed)) if cached else None
        started = time.perf_counter()
        band = slice_band(noise, bounds, rank).contiguous()
        loop_predict = cache.wrap(predict) if cache is not None else predict
        out = gather_bands(cached_loop(loop_predict, band, scheduler(), cache), group, bounds)
        seconds = time.perf_counter() - started
        reused = len(cache.report()["reused_steps"]) if cache is not None else 0
        sent = (_sent(handle.bytes_sent.total) - before) / cfg.steps
        return Timed({"loop_s": seconds, "reused": reused, "sent": sent}, out)

    return {"bands": lambda: run(False), "bands cached": lambda: run(True)}, ""


def _remove_diffusers_hooks(model: torch.nn.Module) -> None:
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and "taylorseer_cache" in registry.hooks:
            registry.remove_hook("taylorseer_cache", recurse=False)


def measure(cfg: BenchConfig, settings: list[tuple[int, int]], composed: tuple[int, int], repeats: int, warmup: int) -> dict:
    torch.set_num_threads(1)
    bench = MODELS["flux"]
    model = bench.build(cfg)
    noise = bench.latent(model, cfg)
    scheduler = bench.scheduler_factory(model, cfg)
    predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, False))
    outputs: dict[str, torch.Tensor] = {}
    reused: dict[str, int] = {}
    sent: dict[str, float] = {}

    def single(name: str, threads: int = 1, ours: tuple[int, int] | None = None, theirs: TaylorSeerCacheConfig | None = None) -> Callable[[], float]:
        def run() -> float:
            torch.set_num_threads(threads)
            cache = apply_taylorseer(_config(*ours)) if ours is not None else None
            if theirs is not None:
                apply_taylorseer_cache(model, theirs)
                # the model's registry caches its children's registries at the first cache_context; hooks added
                # after it are found only once that list is rebuilt
                registry = getattr(model, "_diffusers_hook", None)
                if registry is not None:
                    registry._child_registries_cache = None
            try:
                started = time.perf_counter()
                loop_predict = cache.wrap(predict) if cache is not None else predict
                context = model.cache_context if theirs is not None else None  # diffusers' hooks keep state per context
                outputs[name] = cached_loop(loop_predict, noise, scheduler(), cache, context)
                seconds = time.perf_counter() - started
            finally:
                torch.set_num_threads(1)
                if cache is not None:
                    reused[name] = len(cache.report()["reused_steps"])
                if theirs is not None:
                    before = theirs.disable_cache_before_step  # its schedule (TaylorSeerCacheHook)
                    reused[name] = sum(1 for s in range(before, cfg.steps) if (s - before - 1) % theirs.cache_interval)
                    _remove_diffusers_hooks(model)
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
        for interval, order in settings:
            label = _label(interval, order)
            runs[f"taylorseer {label}"] = single(f"taylorseer {label}", ours=(interval, order))
            theirs = TaylorSeerCacheConfig(
                cache_interval=interval, disable_cache_before_step=WARMUP_STEPS, max_order=order,
                taylor_factors_dtype=torch.float32,
            )
            runs[f"diffusers taylorseer {label}"] = single(f"diffusers taylorseer {label}", theirs=theirs)
        interval, order = composed
        lite = TaylorSeerCacheConfig(
            cache_interval=interval, disable_cache_before_step=WARMUP_STEPS, max_order=order,
            taylor_factors_dtype=torch.float32, use_lite_mode=True,
        )
        runs[f"diffusers taylorseer lite {_label(*composed)}"] = single(f"diffusers taylorseer lite {_label(*composed)}", theirs=lite)
        runs[f"bands displaced {WORKERS}"] = parallel(f"bands displaced {WORKERS}", "bands")
        name = f"bands displaced {WORKERS} + taylorseer {_label(*composed)}"
        runs[name] = parallel(name, "bands cached")
        runs["1 process x 2 threads"] = single("1 process x 2 threads", threads=2)
        seconds = alternate(runs, repeats, warmup)
    return {"seconds": seconds, "outputs": outputs, "reused": reused, "sent": sent}


def section(cfg: BenchConfig, measured: dict, command: str, args: argparse.Namespace) -> str:
    seconds, outputs, reused, sent = measured["seconds"], measured["outputs"], measured["reused"], measured["sent"]
    base = median(seconds["1 worker"])
    lines = [
        "| configuration | s per loop (median) | speed-up vs 1 worker | steps predicted | PSNR vs full compute (dB) "
        "| MiB sent per step per worker |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in seconds.items():
        quality = psnr(outputs[name], outputs["1 worker"])
        shown = "exact" if math.isinf(quality) else f"{quality:.1f}"
        steps = f"{reused[name]} of {cfg.steps}" if name in reused else "-"
        mib = f"{sent[name] / 2**20:.2f}" if name in sent else "-"
        lines.append(f"| {name} | {median(values):.2f} | {base / median(values):.2f}x | {steps} | {shown} | {mib} |")
    image_tokens = (cfg.size // 16) ** 2
    return (
        "## Step caching: TaylorSeer on a Flux-layout transformer\n\n"
        + provenance(command)
        + f"- model: {MODELS['flux'].describe(cfg)}, float32, random weights (seed 0), eval\n"
        f"- image {cfg.size}x{cfg.size}: {image_tokens} image tokens + {cfg.text_tokens} text tokens; {cfg.steps} "
        "flow-matching Euler steps; seconds of the whole loop, median of "
        f"{args.repeats} alternating rounds after {args.warmup} warm-up; PSNR of the final latent against `1 worker`\n"
        f"- Tessera's TaylorSeer: warm-up {WARMUP_STEPS} steps, then a full step every `i` steps, Taylor order `o`; "
        "diffusers': its own hooks and schedule at the same settings\n"
        f"- bands: {WORKERS} gloo workers, displaced, the CLI's patch defaults\n\n" + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--settings", default="2:1,3:1,3:2", help="comma-separated interval:order pairs")
    ap.add_argument("--composed", default="3:1", help="interval:order composed with the bands")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    bench = MODELS["flux"]
    cfg = BenchConfig(model="flux", text_tokens=bench.text_tokens(), **bench.defaults, **patch_defaults())
    cfg = BenchConfig(**{**cfg.__dict__, "size": args.size, "steps": args.steps})
    bench.check(cfg)
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",") if s]
    composed = tuple(int(v) for v in args.composed.split(":"))
    measured = measure(cfg, settings, composed, args.repeats, args.warmup)
    command = "python -m bench.step_cache_taylorseer " + " ".join(argv if argv is not None else sys.argv[1:])
    body = section(cfg, measured, command, args)
    if args.no_write:
        print(body)
    else:
        write_section("step-cache-taylorseer", body)
    return body


if __name__ == "__main__":
    main()
