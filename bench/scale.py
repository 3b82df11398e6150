"""Predicted scaling of each strategy from 1 to 64 workers (the cost model, parallel/cost).

    .venv/bin/python -m bench.scale              # print and write the "scale" section of BENCHMARKS.md
    .venv/bin/python -m bench.scale --no-write

Nothing runs at full size: every model is profiled on the meta device from its published config, and
step times come from FLOPs, dispatched ops, traffic and the device/link specs in parallel/cost/specs.yaml.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import provenance, write_section
from parallel.cost.choose import candidate_degrees, choose_degree, ring_degrees
from parallel.cost.predict import cached_profile, predict_model
from parallel.cost.specs import load_specs

DEGREES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# (title, model, height, width, frames, device, link, [(strategy, mode, scheme)])
SCENARIOS = [
    (
        "built-in image model, 1024x1024, CPU workers on loopback",
        "builtin-image",
        1024,
        1024,
        1,
        "cpu-core",
        "loopback",
        [("patch", "sync", "neighbour"), ("patch", "displaced", "neighbour")],
    ),
    (
        "SDXL, 3840x3840, A100s on NVLink",
        "sdxl",
        3840,
        3840,
        1,
        "a100-80gb",
        "nvlink3",
        [
            ("patch", "displaced", "neighbour"),
            ("patch", "displaced", "allgather"),
            ("cfg", "displaced", "neighbour"),
        ],
    ),
    (
        "SDXL, 3840x3840, A100s over 100 GbE",
        "sdxl",
        3840,
        3840,
        1,
        "a100-80gb",
        "ethernet-100g",
        [("patch", "sync", "neighbour"), ("patch", "displaced", "neighbour")],
    ),
    (
        "PixArt-alpha, 4096x4096, H100s on NVLink",
        "pixart-alpha",
        4096,
        4096,
        1,
        "h100",
        "nvlink4",
        [("patch", "displaced", "neighbour")],
    ),
    (
        "FLUX.1-dev, 2048x2048, A100s on NVLink: bands against sequence parallelism (cell: its best Ring degree)",
        "flux.1-dev",
        2048,
        2048,
        1,
        "a100-80gb",
        "nvlink3",
        [("patch", "displaced", "neighbour"), ("sequence", "sync", "neighbour")],
    ),
    (
        "Wan 2.1 14B, 81 frames 720x1280, H100s on NVLink (frame pipeline, blocks of 8 latent frames: a step is one "
        "block's step through every stage)",
        "wan2.1-14b",
        720,
        1280,
        81,
        "h100",
        "nvlink4",
        [("frame-pipeline", "sync", "neighbour")],
    ),
]


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def table(
    model: str, height: int, width: int, frames: int, device: str, link: str, variants: list
) -> list[str]:
    dtype = load_specs().device(device).dtype
    prof = cached_profile(model, height, width, frames, None, dtype)
    head = "| workers | " + " | ".join(
        s if s == "sequence" else f"{s} {m}{'' if sch == 'neighbour' else ' ' + sch}" for s, m, sch in variants
    )
    lines = [head + " |", "|---" * (len(variants) + 1) + "|"]
    allowed = {
        s: set(candidate_degrees(prof, max(DEGREES), "cfg" if s == "cfg" else "patch"))
        for s, _, _ in variants
    }
    for n in DEGREES:
        cells = []
        for strategy, mode, scheme in variants:
            ok = n == 1 or (
                n in allowed[strategy] if strategy != "frame-pipeline" else n <= max(prof.blocks, 1)
            )
            rings = ring_degrees(prof, n) if strategy == "sequence" and n > 1 else [1]
            if not ok or not rings:
                cells.append("-")
                continue
            p = min(
                (
                    predict_model(
                        model,
                        height,
                        width,
                        strategy,
                        n,
                        device,
                        link,
                        mode,
                        frames=frames,
                        warmup_steps=1 if mode == "displaced" else 0,
                        scheme=scheme,
                        ring=ring,
                    )
                    for ring in rings
                ),
                key=lambda p: p.mean_step_s,
            )
            mem = "" if p.fits else " **OOM**"
            ring = f" (ring {p.ring})" if strategy == "sequence" and n > 1 else ""
            cells.append(
                f"{p.mean_step_s:.3g} s, {p.speedup:.2f}x{ring}, {gib(p.memory_bytes)}{mem}, "
                f"{size(p.traffic.total_bytes)}"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    lines = [
        "## Predicted scaling, 1 to 64 workers (cost model)",
        "",
        provenance("python -m bench.scale " + " ".join(sys.argv[1:])),
        "Predictions, not measurements: `parallel/cost` profiles each model on the meta device from its published "
        "config and turns FLOPs, ops and bytes into time with `parallel/cost/specs.yaml`. Each cell: mean seconds "
        "per step (50 steps, displaced after 1 sync step), speedup over one worker, per-worker memory, MB each "
        "worker sends per step. '-': the latent cannot be cut into that many bands (or, for sequence parallelism, "
        "its tokens or heads into that many workers). Strategy 'cfg' is 2 branches x workers/2 bands; 'sequence' is "
        "diffusers' Ulysses x Ring over all the workers.",
    ]
    for title, model, h, w, frames, device, link, variants in SCENARIOS:
        lines += ["", f"### {title}", ""]
        lines += table(model, h, w, frames, device, link, variants)
        if frames == 1:
            best = choose_degree(model, h, w, 64, device, link)
            lines += ["", f"degree=auto (patch bands) with 64 free workers: **{best}**."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("scale", body)


if __name__ == "__main__":
    main()
