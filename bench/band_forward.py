"""Where a row band's forward spends its time: the built-in video DiT on 1 worker against one band of 2.

    python -m bench.band_forward [--sizes 64 128 256] [--frames 8] [--repeats 20] [--rounds 3] [--profile]

The cost model prices a band of ``degree`` as its share of the FLOPs, every op's dispatch (ops do not shrink)
and one K/V exchange per layer; at small sizes it overrates the split (BENCHMARKS.md, "Cost-model latency of
the loopback link"). This times one transformer forward (no sampler, no VAE) in two spawned processes of one
torch thread in a gloo group: rank 0 alone on the whole latent while rank 1 waits, then both on their bands
(``parallelize_wan_patch``, sync), wall and CPU seconds per forward and the ops each dispatches. ``--profile``
adds the PyTorch profiler's self CPU time per op of 5 forwards, whole against band (rank 0), largest first.
Rounds alternate the sizes; the figures are medians over them. Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import machine, spawn_ranks, versions


class OpCount(TorchDispatchMode):
    """Ops dispatched, views left out (as ``tests/cost/_cost_workers.py`` counts them)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not (getattr(func, "is_view", False) or "_unsafe_view" in str(func))
        return func(*args, **(kwargs or {}))


def per_forward(forward, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per forward, after 3 warm-up forwards."""
    for _ in range(3):
        forward()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        forward()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def op_seconds(forward) -> dict[str, float]:
    """Self CPU seconds per op over 5 forwards."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(5):
            forward()
    return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}


def rank_main(rank: int, world: int, size: int, frames: int, repeats: int, profile: bool, port: int, queue) -> None:
    from parallel.patch.bands import band_bounds, slice_band
    from pipelines.builtin.video import build_video_transformer, transformer_config
    from pipelines.families.wan.patch import parallelize_wan_patch

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = build_video_transformer()
    latent = torch.randn(1, 4, frames, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 16, transformer_config()["text_dim"], generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor([500.0])
    result: dict = {"rank": rank}
    with torch.no_grad():

        def forward(x: torch.Tensor):
            return lambda: model(x, timestep, text, return_dict=False)[0]

        def measure(name: str, x: torch.Tensor) -> None:
            """``name``: seconds per forward; ``name_ops``: ops of one; ``name_profile``: self CPU per op."""
            result[name] = per_forward(forward(x), repeats)
            with OpCount() as count:
                forward(x)()
            result[f"{name}_ops"] = count.ops
            if profile:
                result[f"{name}_profile"] = op_seconds(forward(x))

        if rank == 0:
            measure("whole", latent)
        dist.barrier()
        parallelize_wan_patch(model, dist.group.WORLD)
        measure("band", slice_band(latent, band_bounds(latent.shape[-2], world, align=2), rank))
    dist.destroy_process_group()
    queue.put((rank, result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="frame sizes in pixels")
    parser.add_argument("--frames", type=int, default=8, help="latent frames (the built-in VAE is per frame)")
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per size and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds")
    parser.add_argument("--profile", action="store_true", help="per-op self CPU time, whole against band")
    args = parser.parse_args()
    runs: dict[int, list[dict]] = {size: [] for size in args.sizes}
    for _ in range(args.rounds):
        for size in args.sizes:
            results = spawn_ranks(rank_main, 2, size, args.frames, args.repeats, args.profile)
            runs[size].append(results[0][1])
    print(f"machine: {machine()}; {versions()}; {args.frames} latent frames, {args.repeats} forwards x "
          f"{args.rounds} rounds, medians\n")
    print("| size | tokens | 1 worker ms (CPU) | band of 2 ms (CPU) | band / whole, wall | ops whole / band |")
    print("|---|---|---|---|---|---|")
    for size, rounds in runs.items():
        whole = [statistics.median(r["whole"][i] for r in rounds) * 1e3 for i in (0, 1)]
        band = [statistics.median(r["band"][i] for r in rounds) * 1e3 for i in (0, 1)]
        tokens = args.frames * (size // 16) ** 2
        print(f"| {size} px | {tokens} | {whole[0]:.1f} ({whole[1]:.1f}) | {band[0]:.1f} ({band[1]:.1f}) | "
              f"{band[0] / whole[0]:.2f} | {rounds[0]['whole_ops']} / {rounds[0]['band_ops']} |")
    if args.profile:
        for size, rounds in runs.items():
            whole, band = rounds[-1]["whole_profile"], rounds[-1]["band_profile"]
            print(f"\n{size} px, self CPU ms per forward (last round), largest in the band first:\n")
            print("| op | whole | band |")
            print("|---|---|---|")
            for op in sorted(band, key=lambda k: -band[k])[:12]:
                print(f"| {op} | {whole.get(op, 0.0) * 200:.2f} | {band[op] * 200:.2f} |")
            print(f"| all ops | {sum(whole.values()) * 200:.2f} | {sum(band.values()) * 200:.2f} |")


if __name__ == "__main__":
    main()
