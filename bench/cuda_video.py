"""The frame pipeline (built-in video model) on one GPU: frames/s and peak GPU memory against video length.

    python -m bench.cuda_video --out DIR          # on the lent GPU machine

One process, one GPU, no Ray and no process group (a GPU machine with one chip runs one stage); the
decoded blocks are counted and dropped instead of being encoded to H.264 (the GPU image has no ffmpeg),
so frames/s is denoise + per-block VAE decode. Peak memory is torch.cuda.max_memory_allocated over the
whole video, reset before each length. Writes DIR/cuda_video.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench.common import DroppingWriter
from cluster.jobs.video import VideoSpec
from pipelines.families.wan.loading import load_video_pipeline
from runtime import memory
from runtime.jobs.video_session import VideoSession


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(pipe, spec: VideoSpec, out: Path, device: str) -> dict:
    sync(device)
    memory.reset_peak(device)
    base = memory.current_bytes(device)
    started = time.perf_counter()
    session = VideoSession(pipe, spec.placed(spec.model, 1), group=None, make_writer=DroppingWriter)
    session.advance()
    report = session.finish()
    sync(device)
    wall = time.perf_counter() - started
    return {
        "frames": report["frames"],
        "frames_written": report.get("frames_written"),
        "wall_s": wall,
        "frames_per_s": report["frames"] / wall,
        "denoise_s": report["denoise_s"],
        "decode_s": report["decode_s"],
        "peak_bytes_above_weights": memory.peak_bytes(device) - base,
        "weights_bytes": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--block-frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda", help="cpu for a dry run of the script")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dtype in args.dtypes:
        spec0 = VideoSpec(dtype=dtype)
        pipe = load_video_pipeline(spec0.model_path(), dtype, args.device)
        for frames in [args.frames[0]] + list(args.frames):  # the first run warms up
            spec = VideoSpec(
                dtype=dtype,
                height=args.size,
                width=args.size,
                frames=frames,
                block_frames=args.block_frames,
                steps=args.steps,
            )
            spec.validate()
            row = {"dtype": dtype, "size": args.size, "steps": args.steps, **run(pipe, spec, args.out, args.device)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        rows[-len(args.frames) - 1]["warm_up"] = True
        del pipe
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    (args.out / "cuda_video.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
