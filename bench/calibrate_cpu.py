"""Calibrate the cost model's "cpu-core" device and "loopback" link on this machine.

    .venv/bin/python -m bench.calibrate_cpu --rounds 5

Measures, in alternating rounds (medians; the machine is shared):
- co-run efficiency: seconds of one built-in UNet forward (512x512, batch 2, one thread) in one process
  alone vs in each of two processes running at once; alone / together is the throughput a worker keeps
  while every core computes (parallel/cost/specs.yaml: cpu-core.corun_efficiency);
- loopback link: gloo over TCP on 127.0.0.1 between two processes: seconds per 8 MB send/receive
  (bandwidth) and per 8-byte all-reduce (latency).
Prints the figures and writes the "cost-calibration" section of BENCHMARKS.md; copy them into specs.yaml
(the effective FLOP/s comes from the 1-worker step time of bench.patch_parallel, see specs.yaml).
Only meaningful on a quiet machine: any other busy process makes "two at once" share the cores three ways.
Each round first waits (up to 2 minutes) for the load average to fall below --max-load and reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.distributed as dist

from bench.common import provenance, write_section

UNET_CONFIG = Path(__file__).resolve().parent.parent / "pipelines/builtin/builtin-image/unet/config.json"


def _forward_s(out, size: int, reps: int, start) -> None:
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = UNet2DConditionModel.from_config(json.loads(UNET_CONFIG.read_text())).eval()
    x, text = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 77, model.config.cross_attention_dim)
    with torch.no_grad():
        model(x, 500, encoder_hidden_states=text)
        start.wait()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x, 500, encoder_hidden_states=text)
            times.append(time.perf_counter() - t)
    out.put(statistics.median(times))


def corun(processes: int, size: int, reps: int) -> float:
    """Median forward seconds per process with ``processes`` running at once (mean over processes)."""
    ctx = get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(processes)
    procs = [ctx.Process(target=_forward_s, args=(out, size, reps, start)) for _ in range(processes)]
    for p in procs:
        p.start()
    values = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(values) / len(values)


def _link(rank: int, port: int, out, reps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    big, small = torch.zeros(2 * 2**20), torch.zeros(2)
    peer = 1 - rank
    bw, lat = [], []
    for _ in range(reps + 1):
        dist.barrier()
        t = time.perf_counter()
        recv = torch.empty_like(big)
        ops = [dist.P2POp(dist.isend, big, peer), dist.P2POp(dist.irecv, recv, peer)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        bw.append(time.perf_counter() - t)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(small)
        lat.append((time.perf_counter() - t) / 20)
    if rank == 0:
        out.put((big.numel() * 4 / statistics.median(bw[1:]), statistics.median(lat[1:])))
    dist.destroy_process_group()


def link(reps: int) -> tuple[float, float]:
    """(bytes/s each way, seconds per small all-reduce) of gloo on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_link, args=(r, port, out, reps)) for r in range(2)]
    for p in procs:
        p.start()
    result = out.get()
    for p in procs:
        p.join()
    return result


def wait_for_quiet(max_load: float, timeout_s: float) -> float:
    """Wait (up to ``timeout_s``) until the 1-minute load average is below ``max_load``; return it."""
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--max-load", type=float, default=1.0, help="wait for a 1-min load average below this"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    alone, together, loads = [], [], []
    for r in range(args.rounds):
        loads.append(wait_for_quiet(args.max_load, 120.0))
        alone.append(corun(1, args.size, args.reps))
        together.append(corun(2, args.size, args.reps))
        print(
            f"round {r}: load {loads[-1]:.2f}, alone {alone[-1]:.3f} s, together {together[-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    ratios = [a / t for a, t in zip(alone, together)]
    bw, lat = link(10)
    body = "\n".join(
        [
            "## Cost-model calibration of this machine (cpu-core device, loopback link)",
            "",
            provenance("python -m bench.calibrate_cpu " + " ".join(sys.argv[1:])),
            f"Built-in UNet forward, {args.size}x{args.size}, batch 2, 1 thread, median of {args.reps} per process:",
            "",
            "| round | load avg before | alone s | two at once s | co-run efficiency |",
            "|---|---|---|---|---|",
            *[
                f"| {i} | {ld:.2f} | {a:.3f} | {t:.3f} | {a / t:.2f} |"
                for i, (ld, a, t) in enumerate(zip(loads, alone, together))
            ],
            "",
            f"co-run efficiency (median of rounds): **{statistics.median(ratios):.2f}**; "
            f"gloo loopback: {bw / 1e9:.2f} GB/s each way (8 MB send/recv), {lat * 1e6:.0f} us per small all-reduce.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("cost-calibration", body)


if __name__ == "__main__":
    main()
