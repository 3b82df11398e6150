"""What DeepCache and TaylorSeer save on a UNet render, and what they cost in fidelity: Tessera's against full
compute and against the ``DeepCache`` package's helper.

    .venv/bin/python -m bench.step_cache_unet --size 512 --steps 20 --repeats 5

The built-in image model (``builtin-image``), one process with one torch thread as a worker runs, the render
loop of a job (``pipelines.sampling.DenoiseLoop``, DDIM, CFG 5.0 batched: batch 2), the denoising loop timed
(prompt encoding and VAE decode are not). Variants, run in turn in every round (``bench.common.alternate``):

- **full compute**: no cache;
- **Tessera DeepCache, interval k** (``parallel.cache.deepcache``, branch 0: only the outermost down/up block
  pair recomputed on reusing steps), k = 2, 3, 5;
- **DeepCache package, interval k** (``DeepCache==0.1.1``'s ``DeepCacheSDHelper``, when it is installed; it is
  no dependency of Tessera), with the branch id that skips the same modules (``3 * branch + layers_per_block``);
- **Tessera TaylorSeer, interval k** (``parallel.cache.taylorseer``, order 1, 2 warm-up steps): the UNet runs every
  k-th step and its guided prediction is extrapolated in between. diffusers' TaylorSeer hooks have no UNet
  patterns (they hook transformer blocks' attention or ``proj_out``), so there is no diffusers row;
- **Tessera block caching, threshold t** (``parallel.cache.block_cache``, every block's reuse driven by its measured
  change; all blocks run twice every 6 steps); its "full steps" are the steps on which no block was reused.

Both caches run the same schedule: a full step every ``interval`` steps from the first, no warmup (the package
has none; Tessera's ``warmup_steps`` is set to ``--cache-warmup``, 0 by default). Fidelity: PSNR of each
variant's final image (VAE-decoded, [0, 1], peak 1) against full compute's, and the largest difference of the
final latents between Tessera's and the package's at the same interval. Medians over ``--repeats`` rounds after
one warm-up round. Writes the "step-cache-unet" section of BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import alternate, median, provenance, write_section

INTERVALS = (2, 3, 5)
TAYLORSEER_INTERVALS = (2, 3, 4)
BLOCK_THRESHOLDS = (0.05, 0.1, 0.2)
BRANCH = 0
PROMPT = "blue and yellow vertical stripes"
GUIDANCE = 5.0
SEED = 0


class _PackagePipe:
    """What the package's helper reads of a pipeline: the UNet, and the scheduler whose ``timesteps`` it finds
    the step index in (the render loop's own scheduler, not the pipeline's)."""

    def __init__(self, unet: torch.nn.Module, scheduler: Any) -> None:
        self.unet, self.scheduler = unet, scheduler


def package_helper() -> tuple[Any, str]:
    """The package's helper class, or None and why not."""
    try:
        from DeepCache import DeepCacheSDHelper
    except Exception as err:  # noqa: BLE001 - any failure to import means: not measured
        return None, f"not measured: `import DeepCache` failed ({type(err).__name__}: {err})"
    from importlib.metadata import version

    return DeepCacheSDHelper, f"DeepCache {version('DeepCache')}"


def image_psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cache-warmup", type=int, default=0, help="Tessera's warmup_steps (the package has none)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = "python -m bench.step_cache_unet " + " ".join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)

    from parallel.cache.block_cache import apply_block_cache
    from parallel.cache.config import CacheConfig
    from parallel.cache.deepcache import apply_deepcache
    from parallel.cache.taylorseer import apply_taylorseer
    from pipelines.builtin import resolve_model
    from pipelines.loading import load_pipeline
    from pipelines.sampling import DenoiseLoop, batched_cfg_predictor, decode_latents, encode_conditioning

    pipe = load_pipeline(resolve_model("builtin-image"))
    unet = pipe.unet
    cond = encode_conditioning(pipe, PROMPT, "", GUIDANCE, unet.device)
    predictor = batched_cfg_predictor(unet, cond)
    helper_class, package = package_helper()
    package_branch = 3 * BRANCH + unet.config.layers_per_block

    latents: dict[str, torch.Tensor] = {}
    full_steps: dict[str, int] = {}

    def render(name: str, implementation: str | None = None, interval: int = 1) -> float:
        """Seconds of one render's denoising loop, with ``implementation``'s cache ("tessera", "package",
        "taylorseer", "block-cache" or None) at ``interval`` (block caching: its threshold); keeps its final latent and
        its count of full steps."""
        cache = helper = None
        if implementation == "taylorseer":
            cache = apply_taylorseer(CacheConfig(mode="taylorseer", interval=interval, order=1, warmup_steps=2))
        loop = DenoiseLoop(pipe, "ddim", args.steps, SEED, args.size, args.size, cache.wrap(predictor) if cache else predictor)
        if implementation == "block-cache":
            cache = apply_block_cache(unet, CacheConfig(mode="block-cache", threshold=interval, interval=6), first_step=0)
        if implementation == "tessera":
            config = CacheConfig(
                mode="deepcache", interval=interval, branch=BRANCH, warmup_steps=args.cache_warmup
            )
            cache = apply_deepcache(unet, config, first_step=0)
        elif implementation == "package":
            helper = helper_class(pipe=_PackagePipe(unet, loop.scheduler))
            helper.set_params(cache_interval=interval, cache_branch_id=package_branch)
            helper.enable()
        started = time.perf_counter()
        while not loop.done:
            if cache is not None:
                cache.begin_step(loop.step_index)
            loop.step()
            if cache is not None:
                cache.end_step()
        seconds = time.perf_counter() - started
        full_steps[name] = args.steps
        if cache is not None:
            full_steps[name] = len(cache.report()["full_steps"])
            cache.close()
        if helper is not None:
            helper.disable()
            full_steps[name] = len(range(0, args.steps, interval))  # its schedule: every interval-th from 0
        latents[name] = loop.latents
        return seconds

    runs: dict[str, Callable[[], float]] = {"full compute": lambda: render("full compute")}
    for k in INTERVALS:
        name = f"Tessera DeepCache, interval {k}"
        runs[name] = lambda k=k, name=name: render(name, "tessera", k)
        if helper_class is not None:
            name = f"DeepCache package, interval {k}"
            runs[name] = lambda k=k, name=name: render(name, "package", k)
    for k in TAYLORSEER_INTERVALS:
        name = f"Tessera TaylorSeer, interval {k}"
        runs[name] = lambda k=k, name=name: render(name, "taylorseer", k)
    for threshold in BLOCK_THRESHOLDS:
        name = f"Tessera block caching, threshold {threshold:g}"
        runs[name] = lambda threshold=threshold, name=name: render(name, "block-cache", threshold)
    seconds = alternate(runs, args.repeats)

    images = {name: decode_latents(pipe, latent) for name, latent in latents.items()}
    full = median(seconds["full compute"])
    rows = []
    for name, values in seconds.items():
        quality = image_psnr(images[name], images["full compute"])
        same = ""
        if name.startswith("Tessera DeepCache") and helper_class is not None:
            other = latents[name.replace("Tessera DeepCache", "DeepCache package")]
            same = f"{float((latents[name] - other).abs().max()):.1e}"
        rows.append(
            f"| {name} | {full_steps[name]} | {median(values):.3f} | {full / median(values):.2f}x | "
            f"{'exact' if math.isinf(quality) else f'{quality:.1f}'} | {same or '-'} | "
            f"{', '.join(f'{v:.3f}' for v in values)} |"
        )
    body = f"""## DeepCache, TaylorSeer and block caching on the built-in UNet ({args.size}x{args.size}, {args.steps} DDIM steps, CFG {GUIDANCE})

{provenance(command)}- DeepCache package: {package}

One process, one torch thread; the render loop of a job (CFG batched), the denoising loop timed (not the prompt
encoding nor the VAE decode). Branch {BRANCH} (only the outermost down/up block pair recomputed on reusing steps;
the package's branch id {package_branch} skips the same modules). Both caches: a full step every `interval`
steps from the first (Tessera's warmup_steps={args.cache_warmup}); TaylorSeer: order 1, 2 warm-up steps, then a full
step every `interval`. PSNR of the final image (VAE-decoded, in
[0, 1]) against full compute's; "max diff vs package": largest |difference| of the final latents between
Tessera's and the package's cache at the same interval. Medians over {args.repeats} alternating rounds after 1
warm-up round:

| variant | full steps | s per render (median) | speedup | image PSNR dB | max diff vs package | runs (s) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_write:
        write_section("step-cache-unet", body)
    return body


if __name__ == "__main__":
    main()
