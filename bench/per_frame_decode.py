"""The built-in video model's per-frame VAE: seconds to decode an 8-frame block, by frames per VAE call and size.

    .venv/bin/python -m bench.per_frame_decode [--sizes 64,128,256,512] [--repeats 3]

Decides ``pipelines.families.wan.per_frame``'s chunking: each latent frame decodes on its own, so a block's
frames may go to the VAE at once or a few at a time. Measured in a child process that starts as a CPU worker
does (malloc's huge pages from ``runtime.heap.worker_env``, the fixed mmap threshold, the heap trimmed after
each block), one torch thread, thread CPU seconds per block (steadier than wall time on a shared machine), the
chunk sizes alternated within each round; median of ``--repeats`` rounds. Writes the "per-frame-decode"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import median, provenance, write_section

BLOCK = 8
CHUNKS = (8, 4, 2, 1)


def child(size: int, repeats: int) -> dict[str, list[float]]:
    """In a process started with the worker's environment: {chunk: seconds per block, by round}."""
    import torch

    from cluster.jobs.video import VideoSpec
    from pipelines.families import family_for_dir
    from pipelines.families.wan import per_frame
    from runtime.heap import fix_mmap_threshold, trim_heap

    torch.set_num_threads(1)
    fix_mmap_threshold("cpu")
    path = VideoSpec(model="builtin-video").model_path()
    pipe = family_for_dir(path).load(path, "float32", "cpu")
    side = size // pipe.vae_scale_factor
    latent = torch.randn(1, 4, BLOCK, side, side, generator=torch.Generator().manual_seed(0))
    picked = per_frame.chunk_frames(size, size)
    results: dict[str, list[float]] = {str(c): [] for c in CHUNKS}
    for round_index in range(repeats + 1):  # the first round warms up
        for chunk in CHUNKS:
            per_frame.CHUNK_FRAMES, per_frame.CHUNK_PIXELS = chunk, size * size * chunk
            started = time.thread_time()
            pipe.decode_block(latent)
            trim_heap("cpu")
            if round_index:
                results[str(chunk)].append(time.thread_time() - started)
    results["picked"] = [float(picked)]
    return results


def measure(size: int, repeats: int) -> dict[str, list[float]]:
    from runtime.heap import worker_env

    env = {**os.environ, **worker_env("cpu", {})}
    out = subprocess.run(
        [sys.executable, "-m", "bench.per_frame_decode", "--child", str(size), "--repeats", str(repeats)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats)))
        return
    command = "python -m bench.per_frame_decode" + (
        f" --sizes {args.sizes}" if args.sizes != "64,128,256,512" else ""
    )
    header = " | ".join(f"{c} x {BLOCK // c}" if c < BLOCK else f"{c} at once" for c in CHUNKS)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        got = measure(size, args.repeats)
        picked = int(got.pop("picked")[0])
        cells = [f"{median(got[str(c)]):.3f}" + (" (picked)" if c == picked else "") for c in CHUNKS]
        rows.append(f"| {size}x{size} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    body = f"""## The built-in video model's per-frame VAE: frames per decode call

Seconds (thread CPU, one torch thread) to decode one block of {BLOCK} latent frames, by how many frames each VAE
call takes; median of {args.repeats} rounds after a warm-up, the chunk sizes alternated within a round, in a
process started as a CPU worker (malloc's huge pages, the fixed mmap threshold, the heap trimmed per block).
"picked" is what `pipelines.families.wan.per_frame.chunk_frames` decodes with at that size.

{provenance(command)}
| size | {header} |
|---|{"---|" * len(CHUNKS)}
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_write:
        write_section("per-frame-decode", body)


if __name__ == "__main__":
    main()
