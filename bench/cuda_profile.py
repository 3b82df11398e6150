"""Where one built-in-model step goes on a GPU: eager op dispatch vs kernels, and the top kernels.

    python -m bench.cuda_profile --out DIR     # on the lent GPU machine

For each size: the UNet forward (batch 2, CFG) timed with CUDA events (median of 10 after 3 warm-ups),
the number of aten ops dispatched and CUDA kernels launched per forward (torch.profiler), the CPU-side
time per op, and the five kernels with the most GPU time. These calibrate the cost model's GPU entries
(``op_overhead_s`` and ``efficiency`` in parallel/cost/specs.yaml). Writes DIR/cuda_profile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from pipelines.builtin import resolve_model
from pipelines.loading import load_pipeline


def forward_ms(unet, x, text, repeats: int = 10) -> tuple[float, float]:
    """(GPU ms per forward by CUDA events, host ms per forward without synchronising each one)."""
    import time

    times = []
    with torch.no_grad():
        for _ in range(3):
            unet(x, 500, encoder_hidden_states=text)
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            unet(x, 500, encoder_hidden_states=text)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        host_started = time.perf_counter()
        for _ in range(repeats):
            unet(x, 500, encoder_hidden_states=text)
        host_ms = (time.perf_counter() - host_started) * 1000 / repeats
        torch.cuda.synchronize()
    return statistics.median(times), host_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    pipe = load_pipeline(resolve_model("builtin-image"), args.dtype, "cuda")
    unet = pipe.unet.eval()
    rows = []
    for size in args.sizes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, unet.config.in_channels, size // 8, size // 8, generator=g).to("cuda", dtype)
        text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to("cuda", dtype)
        gpu_ms, host_ms = forward_ms(unet, x, text)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, torch.no_grad():
            unet(x, 500, encoder_hidden_states=text)
            torch.cuda.synchronize()
        raw = prof.events()
        aten_ops = sum(1 for e in raw if e.name.startswith("aten::") and e.cpu_parent is None)
        launches = sum(1 for e in raw if e.device_type == torch.autograd.DeviceType.CUDA)
        kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        top = sorted(kernels, key=lambda e: getattr(e, "device_time_total", 0), reverse=True)[:5]
        row = {
            "size": size,
            "dtype": args.dtype,
            "gpu_ms_per_forward": gpu_ms,
            "host_ms_per_forward_unsynchronised": host_ms,
            "aten_ops_top_level": aten_ops,
            "cuda_kernels": launches,
            "host_us_per_kernel": host_ms * 1000 / max(launches, 1),
            "top_kernels": [[e.key[:90], round(getattr(e, "device_time_total", 0) / 1000, 3), e.count] for e in top],
        }
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    (args.out / "cuda_profile.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
