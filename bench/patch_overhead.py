"""Where a patch-parallel band's forward time goes, against what this machine can give two workers at all.

    .venv/bin/python -m bench.patch_overhead --size 1024 --forwards 6

The UNet forward alone (no pool, no sampler), one gloo process per worker with one torch thread, the built-in
model, CFG batch 2. Configurations, run one after another:

- **one worker**: the full latent in one process (the baseline);
- **two full forwards at once**: two processes each run the full latent, no communication: how much of two
  cores two single-threaded workers get here (memory bandwidth, shared cache, the host), which bounds any
  2-worker speedup;
- **2 workers, sync / displaced**: the row bands, patched; per forward, the seconds spent inside
  ``Pending.wait`` (blocked on an exchange: the partner's compute not done yet, or transfer), so that
  ``forward - wait`` is the band's own compute plus the exchanges' CPU cost.

Reported: median seconds per forward over forwards 3.. (the first two warm caches and, for displaced, run
synchronously), and the speedup each implies against one worker. The same at a tiny image (``--small``, 64 px
by default: 8x8 latent) shows the fixed cost per forward, which does not shrink with the band: Python and
the posting of every exchange.
Writes the "patch-overhead" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

from bench.common import median, provenance, spawn_ranks, write_section

CONFIGS = {
    "one worker": ("full", 1),
    "two full forwards at once (no communication)": ("full", 2),
    "2 workers, sync": ("sync", 2),
    "2 workers, displaced": ("displaced", 2),
}
"""Label -> (what each process runs, processes)."""


def _worker(rank: int, world: int, what: str, size: int, forwards: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    from parallel import PatchConfig, band_bounds, comm
    from pipelines.builtin import resolve_model
    from pipelines.families.sd.patch import parallelize_unet_patch, unet_alignment
    from pipelines.loading import load_pipeline

    unet = load_pipeline(resolve_model("builtin-image")).unet.eval()
    side = size // 8
    latent = torch.randn(2, unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    waited = [0.0]
    if what == "full":
        x = latent
    else:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        start, end = band_bounds(side, world, unet_alignment(unet))[rank]
        x = latent[:, :, start:end].contiguous()
        parallelize_unet_patch(unet, dist.group.WORLD, PatchConfig(mode=what, warmup_steps=2))
        plain_wait = comm.Pending.wait

        def timed_wait(self: comm.Pending):
            t0 = time.perf_counter()
            try:
                return plain_wait(self)
            finally:
                waited[0] += time.perf_counter() - t0

        comm.Pending.wait = timed_wait
    seconds, waits = [], []
    with torch.no_grad():
        for i in range(forwards):
            waited[0] = 0.0
            t0 = time.perf_counter()
            unet(x, 950 - 50 * i, encoder_hidden_states=text)
            seconds.append(time.perf_counter() - t0)
            waits.append(waited[0])
    queue.put((rank, seconds, waits))
    if what != "full":
        dist.barrier()
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--forwards", type=int, default=6)
    parser.add_argument("--small", type=int, default=64, help="image side of the fixed-cost runs")
    args = parser.parse_args()
    rows = _rows(args.size, args.forwards, CONFIGS)
    small = {k: v for k, v in CONFIGS.items() if v[0] != "full" or v[1] == 1}
    small_rows = _rows(args.small, 4 * args.forwards, small)
    command = "python -m bench.patch_overhead " + " ".join(sys.argv[1:])
    table = (
        "| configuration | s/forward (median, slowest worker) | forwards 3.. | s waiting on exchanges per worker "
        "(median) | throughput vs one worker |\n|---|---|---|---|---|\n"
    )
    body = (
        "## Patch parallelism: where a band's forward time goes (built-in model, CFG batch 2)\n\n"
        + provenance(command)
        + "\n"
        + __doc__.split("\n\n", 2)[2].split("Writes the")[0].strip()
        + f"\n\n{args.size}x{args.size}:\n\n"
        + table
        + "\n".join(rows)
        + f"\n\n{args.small}x{args.small} (fixed cost per forward):\n\n"
        + table
        + "\n".join(small_rows)
    )
    write_section("patch-overhead", body)


def _rows(size: int, forwards: int, configs: dict[str, tuple[str, int]]) -> list[str]:
    rows = []
    base = None
    for label, (what, processes) in configs.items():
        results = spawn_ranks(_worker, processes, what, size, forwards)
        # a step ends when the slowest worker's forward does
        per_forward = [max(r[1][i] for r in results) for i in range(2, forwards)]
        forward = median(per_forward)
        waits = [median(r[2][2:]) for r in results]
        base = forward if base is None else base
        # two processes running full forwards finish two images per forward: twice the work of one worker
        speedup = base / forward * (2 if what == "full" and processes == 2 else 1)
        every = ", ".join(f"{v:.2f}" for v in per_forward)
        wait = ", ".join(f"{w:.2f}" for w in waits) if what != "full" else "-"
        rows.append(f"| {label} | {forward:.3f} | {every} | {wait} | {speedup:.2f}x |")
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
