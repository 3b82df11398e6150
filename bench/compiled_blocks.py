"""``compile=true`` on CPU: what compiling the denoiser's repeated blocks costs once and saves per render.

    python -m bench.compiled_blocks --model builtin-image --size 512 --steps 20 --repeats 3

One process, one torch thread, a render session as a worker opens it (``runtime.jobs.image_session``) on the model's
pipeline: the first compiled render (which pays torch.compile's tracing and Inductor's C++ build of the blocks), then
eager and compiled renders in alternating rounds. Figures: the first compiled render's seconds, the median seconds of
the later ones, and the largest difference of the final latents (Inductor fuses differently, so not exactly equal).
``--model`` may be a local diffusers directory (e.g. a Flux-layout pipeline) as well as a built-in name.

Writes the "compiled-blocks" section of BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.common import alternate, median, provenance, write_section
from cluster.jobs.image import RenderSpec
from pipelines.loading import load_pipeline
from runtime.jobs.image_session import open_render_session


def render(pipe, spec: RenderSpec, compiled: bool) -> tuple[float, dict, torch.Tensor]:
    session = open_render_session(pipe, RenderSpec(**{**spec.input_fields(), "compile": compiled}))
    try:
        started = time.perf_counter()
        session.advance(spec.steps)
        seconds = time.perf_counter() - started
        return seconds, session.finish()["compile"], session.latents()
    finally:
        session.close()


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin-image")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = RenderSpec.from_dict({"model": args.model, "height": args.size, "width": args.size, "steps": args.steps})
    spec = spec.placed(spec.model, 1)
    pipe = load_pipeline(spec.model)
    from torch._inductor.utils import cache_dir

    warm_disk = Path(cache_dir()).is_dir() and any(Path(cache_dir()).iterdir())
    first_s, first, _ = render(pipe, spec, True)
    latents: dict[str, torch.Tensor] = {}

    def timed(compiled: bool):
        def run() -> float:
            seconds, _, latent = render(pipe, spec, compiled)
            latents["compiled" if compiled else "eager"] = latent
            return seconds

        return run

    seconds = alternate({"eager": timed(False), "compiled": timed(True)}, args.repeats, warmup=1)
    eager, compiled = median(seconds["eager"]), median(seconds["compiled"])
    diff = (latents["compiled"] - latents["eager"]).abs().max().item()
    command = "python -m bench.compiled_blocks " + " ".join(argv if argv is not None else sys.argv[1:])
    body = (
        f"## compile=true: the denoiser's repeated blocks compiled ({args.model}, CPU)\n\n"
        + provenance(command)
        + f"- {args.size}x{args.size}, {args.steps} steps ({spec.sampler} sampler), one process, one torch thread; "
        f"{first['blocks']} blocks compiled (the family's `repeated_blocks`); seconds of the denoising loop\n\n"
        "| render | seconds (median) | vs eager |\n|---|---|---|\n"
        f"| eager | {eager:.2f} | 1.00x |\n"
        f"| compiled, first on the worker (pays the compile) | {first_s:.2f} | {eager / first_s:.2f}x |\n"
        f"| compiled, later jobs | {compiled:.2f} | {eager / compiled:.2f}x |\n\n"
        f"Compile time paid by the first job: about {first_s - compiled:.1f} s"
        + (
            " (Inductor's on-disk cache already held kernels from earlier runs on this machine: a fresh worker "
            "machine pays more)"
            if warm_disk
            else " (Inductor's on-disk cache was empty)"
        )
        + ". Largest |difference| of the final "
        f"latent, compiled against eager: {diff:.1e}. Medians of {args.repeats} alternating rounds after 1 warm-up.\n"
    )
    if args.no_write:
        print(body)
    else:
        write_section("compiled-blocks", body)
    return body


if __name__ == "__main__":
    main()
