"""The frame pipeline where cores are to spare: 1 worker against 2 (and 3) stages, without Ray.

    python -m bench.frame_pipeline_cores --frames 256 --repeats 3 --out DIR [--drop-frames] [--stages 2 3]

On the 2-core VM the 2 stages keep both cores busy (BENCHMARKS.md, "The 2 stages fill the cores"), so what they
miss of 1.8x there could be the cores' and not the pipeline's. This runs the same renders as
``bench.frame_pipeline``'s bare configurations (``bare_stage``: spawned processes set up as pool workers, one torch
thread each, a gloo group on loopback; the built-in video model, blocks of 8, 10 steps), alternated, on whatever
machine it is started on; run on one with idle cores (the lent GPU machine's 16), the ratio is the pipeline's own.
``--drop-frames``: stage 0 drops the decoded frames instead of encoding the MP4 (a machine without ffmpeg); run it
so on both machines to compare like with like. Around every run the machine's busy CPU seconds are read. Writes
DIR/frame_pipeline_cores.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.common import alternate, machine, median, versions
from bench.frame_pipeline import bare_fps, spec_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--stages", type=int, nargs="*", default=[2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drop-frames", action="store_true", help="drop decoded frames instead of writing the MP4")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--block-frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    args.model, args.guidance_scale, args.context_frames = "builtin-video", 1.0, 1  # what spec_for reads
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tessera-bench-cores-"))
    result = {
        "command": "python -m bench.frame_pipeline_cores " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "cores": os.cpu_count(),
        "versions": versions(),
        "runs": {},
    }
    for frames in args.frames:
        usage: dict[int, list[tuple[float, float]]] = {}
        runs = {
            f"{degree} {'stages' if degree > 1 else 'worker'}": (
                lambda degree=degree, frames=frames, usage=usage: bare_fps(
                    spec_for(args, frames, degree), scratch / f"{frames}-{degree}.mp4",
                    usage.setdefault(degree, []), args.drop_frames,
                )
            )
            for degree in [1, *args.stages]
        }
        speed = alternate(runs, repeats=args.repeats)
        one = speed["1 worker"]
        rounds = {name: [v / base for v, base in zip(values, one)] for name, values in speed.items()}
        busy = {  # the warm-up round's dropped, as alternate drops its figure
            degree: [round(b / elapsed, 2) for b, elapsed in values[-args.repeats:]] for degree, values in usage.items()
        }
        result["runs"][frames] = {"frames_per_s": speed, "per_round_vs_1": rounds, "cores_busy": busy}
        print(f"{frames} frames (cores busy, of {os.cpu_count()}):", file=sys.stderr)
        for name, values in speed.items():
            print(
                f"  {name}: {median(values):.1f} frames/s, {median(values) / median(one):.2f}x of medians, "
                f"per round {', '.join(f'{r:.2f}' for r in rounds[name])}", file=sys.stderr, flush=True,
            )
        (args.out / "frame_pipeline_cores.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
