"""Print a model's profile at a size: totals and the most expensive layers.

    .venv/bin/python -m parallel.cost.show sdxl 1024 1024 --top 15
    .venv/bin/python -m parallel.cost.show wan2.1-1.3b 480 832 --frames 81
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from parallel.cost.models import registry
from parallel.cost.profile import ModelProfile, profile_model


def summary(prof: ModelProfile, top: int = 10) -> str:
    """Totals, FLOPs by layer kind, and the ``top`` layers by FLOPs, as text."""
    lines = [
        f"{prof.name} {prof.width}x{prof.height}" + (f", {prof.frames} frames" if prof.frames > 1 else "")
        + f", batch {prof.batch}: {prof.flops / 1e12:.3f} TFLOP, {prof.ops} kernel ops, "
        f"parameters {prof.param_bytes / 2**30:.2f} GiB, activation peak {prof.activation_peak_bytes / 2**30:.3f} GiB",
        "",
        "FLOPs by layer kind:",
    ]
    by_kind: dict[str, int] = defaultdict(int)
    for layer in prof.layers:
        by_kind[layer.kind] += layer.flops
    for kind, flops in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        if flops:
            lines.append(f"  {kind:<28} {flops / 1e9:12.1f} GFLOP  {100 * flops / max(prof.flops, 1):5.1f}%")
    lines += ["", f"top {top} layers (GFLOP, parameter MiB, output MiB):"]
    for layer in sorted(prof.layers, key=lambda la: -la.flops)[:top]:
        lines.append(
            f"  {layer.name:<60} {layer.flops / 1e9:10.1f} {layer.param_bytes / 2**20:8.1f} "
            f"{layer.activation_bytes / 2**20:9.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(registry()))
    parser.add_argument("height", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2, help="2: CFG batched")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(summary(profile_model(args.model, args.height, args.width, args.frames, args.batch), args.top))


if __name__ == "__main__":
    main()
