"""How coherent the built-in video model's motion is, measured on MP4s `tessera render job=video` wrote.

Not a speed benchmark: numbers that say whether "moves steadily" is true of a video, for the README's claim.

- stripes: each frame's column profile (mean over rows and channels); the shift between consecutive frames
  is the change of phase of the profile's dominant frequency, in pixels (unambiguous up to half a stripe
  period; a cross-correlation peak is not, it reads a shift by one period as none). Steady motion: one sign,
  similar sizes (a low coefficient of variation).
- a coloured shape: pixels of that colour (nearest of the dataset's named colours); per frame its area and
  centroid. Coherent: present in every frame, the centroid moving by similar steps (a low coefficient of
  variation of the step length).
- flicker: mean absolute change of the frame's mean colour between consecutive frames (0-255 levels).

Two uses:

    python -m bench.video_motion --stripes STRIPES.mp4 --shape SHAPE.mp4 --colour red --label "run 3"
    python -m bench.video_motion --seeds 8 --guidance 1 3     # renders per seed, beside the training clips

With `--seeds N` it renders "blue and yellow vertical stripes" and "a red circle on a blue background" for
seeds 0..N-1 through the job service (an embedded cluster, 2 workers, the frames strategy) and measures the
dataset's own clips of the same kinds (`pipelines/video_dataset.py`) the same way, as the reference for
what the measures give on motion that is steady by construction.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from cluster.video_strip import read_frames
from pipelines.datasets import COLOURS

STRIPES_PROMPT = "blue and yellow vertical stripes"
SHAPE_PROMPT = "a red circle on a blue background"


def stripe_shifts(frames: list[np.ndarray]) -> list[float]:
    """Per consecutive pair, the horizontal shift in pixels (signed, positive = rightwards) of the stripes,
    from the phase of the first frame's dominant column frequency."""
    profiles = [f.astype(float).mean(axis=(0, 2)) for f in frames]
    profiles = [p - p.mean() for p in profiles]
    k = int(np.argmax(np.abs(np.fft.rfft(profiles[0]))[1:])) + 1
    period = len(profiles[0]) / k
    phases = [float(np.angle(np.fft.rfft(p)[k])) for p in profiles]
    wrapped = [(-(b - a) + np.pi) % (2 * np.pi) - np.pi for a, b in zip(phases, phases[1:])]
    return [round(d * period / (2 * np.pi), 2) for d in wrapped]


def shape_track(frames: list[np.ndarray], colour: str) -> list[tuple[float, float, float]]:
    """Per frame (area fraction, centroid x, centroid y) of the pixels nearest to `colour` among the
    dataset's named colours."""
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=float) * 255
    target = names.index(colour)
    track = []
    for frame in frames:
        pixels = frame.astype(float).reshape(-1, 3)
        nearest = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
        mask = (nearest == target).reshape(frame.shape[:2])
        ys, xs = np.nonzero(mask)
        area = mask.mean()
        track.append((area, float(xs.mean()) if len(xs) else float("nan"), float(ys.mean()) if len(ys) else float("nan")))
    return track


def flicker(frames: list[np.ndarray]) -> float:
    means = np.array([f.astype(float).mean(axis=(0, 1)) for f in frames])
    return float(np.abs(np.diff(means, axis=0)).mean())


def _cv(values: list[float]) -> float:
    """Coefficient of variation of the sizes (std / |mean|); nan for fewer than two values."""
    if len(values) < 2 or np.mean(values) == 0:
        return float("nan")
    return float(np.std(values) / abs(np.mean(values)))


def stripe_stats(frames: list[np.ndarray]) -> dict:
    shifts = stripe_shifts(frames)
    direction = np.sign(np.median(shifts))
    same = sum(1 for s in shifts if np.sign(s) == direction and abs(s) >= 0.5)
    return {"shifts": shifts, "same_direction": same, "pairs": len(shifts), "cv": _cv(shifts)}


def shape_stats(frames: list[np.ndarray], colour: str) -> dict:
    track = shape_track(frames, colour)
    steps = [
        float(np.hypot(b[1] - a[1], b[2] - a[2])) for a, b in zip(track, track[1:]) if a[0] > 0.01 and b[0] > 0.01
    ]
    return {
        "present": sum(1 for t in track if t[0] > 0.01),
        "frames": len(track),
        "area": float(np.mean([t[0] for t in track])),
        "steps": [round(s, 1) for s in steps],
        "cv": _cv(steps),
        "median_step": float(np.median(steps)) if steps else float("nan"),
    }


def report(stripes: str, shape: str, colour: str, label: str) -> str:
    s_frames, c_frames = read_frames(stripes), read_frames(shape)
    st, sh = stripe_stats(s_frames), shape_stats(c_frames, colour)
    return "\n".join(
        [
            f"{label}: stripes: shifts per frame {st['shifts']} (px); {st['same_direction']}/{st['pairs']} in the "
            f"dominant direction; CV {st['cv']:.2f}; flicker {flicker(s_frames):.1f} levels",
            f"{label}: {colour} shape: present (>1% of pixels) in {sh['present']}/{sh['frames']} frames; area "
            f"{sh['area']:.3f}; centroid steps {sh['steps']} px; CV {sh['cv']:.2f}; flicker {flicker(c_frames):.1f} levels",
        ]
    )


def to_frames(clip) -> list[np.ndarray]:
    """A clip [frames, 3, H, W] in [-1, 1] (torch) as uint8 [H, W, 3] frames, as an MP4 reader gives them."""
    return list(((clip.permute(0, 2, 3, 1).clamp(-1, 1).numpy() + 1) * 127.5).astype(np.uint8))


def dataset_clips(pattern: str, colour: str | None, count: int, frames: int, size: int) -> list[list[np.ndarray]]:
    """The first `count` training clips of `pattern` (vertical stripes / `colour` shapes), as uint8 frames."""
    from pipelines.video_dataset import VideoShapesConfig, VideoShapesDataset

    data = VideoShapesDataset(VideoShapesConfig())
    clips, index = [], 0
    while len(clips) < count:
        kind, params, fg, _ = data.describe(index)
        wanted = params.get("vertical", False) if pattern == "stripes" else fg == colour
        if kind == pattern and wanted:
            clip, _ = data.draw(index, size=size, frames=frames)
            clips.append(to_frames(clip))
        index += 1
    return clips


def render_seeds(
    seeds: int,
    guidance: float,
    steps: int,
    frames: int,
    out: str,
    model: str = "builtin-video",
    queue: dict | None = None,
) -> dict[str, list[str]]:
    """MP4 paths per prompt kind, one per seed, rendered through the job service; `queue` overrides the
    frame queue's fields (block_stride, context_frames)."""
    from cluster.client import Client
    from runtime.pool import PoolConfig

    prompts = {"stripes": STRIPES_PROMPT, "shape": SHAPE_PROMPT}
    with Client(state_dir=f"{out}/state", pool=PoolConfig(workers=2, device="cpu")) as client:
        jobs = {
            (kind, seed): client.submit(
                {
                    "job": "video",
                    "model": model,
                    "prompt": prompt,
                    "frames": frames,
                    "seed": seed,
                    "steps": steps,
                    "guidance_scale": guidance,
                    "output_dir": out,
                    "parallel": {"strategy": "frames", "degree": 2},
                    **(queue or {}),
                }
            )
            for kind, prompt in prompts.items()
            for seed in range(seeds)
        }
        videos = {key: job.result()["video"] for key, job in jobs.items()}
    return {kind: [videos[(kind, seed)] for seed in range(seeds)] for kind in prompts}


def summary_row(label: str, stripes: list[dict], shapes: list[dict]) -> str:
    """One markdown row: medians over the videos (and the per-video values of the shape's step CV)."""
    present = [s["present"] for s in shapes]
    return (
        f"| {label} | {len(shapes)} | {np.median(present):.0f} of {shapes[0]['frames']} (min {min(present)}) | "
        f"{np.nanmedian([s['cv'] for s in shapes]):.2f} | {np.nanmedian([s['median_step'] for s in shapes]):.1f} | "
        f"{np.median([s['same_direction'] for s in stripes]):.0f} of {stripes[0]['pairs']} | "
        f"{np.nanmedian([s['cv'] for s in stripes]):.2f} |"
    )


HEADER = (
    "| videos | seeds | red shape present (median) | shape step CV (median) | shape step px (median) | "
    "stripe shifts in one direction (median) | stripe shift CV (median) |\n|---|---|---|---|---|---|---|"
)


def evaluate(
    seeds: int,
    guidances: list[float],
    steps: int,
    frames: int,
    size: int,
    model: str = "builtin-video",
    queue: dict | None = None,
) -> str:
    rows = [HEADER]
    clips = {kind: dataset_clips(kind, "red" if kind == "circle" else None, seeds, frames, size) for kind in ("stripes", "circle")}
    rows.append(
        summary_row(
            "training clips (reference)",
            [stripe_stats(c) for c in clips["stripes"]],
            [shape_stats(c, "red") for c in clips["circle"]],
        )
    )
    details = {}
    with tempfile.TemporaryDirectory() as out:
        for guidance in guidances:
            began = time.monotonic()
            paths = render_seeds(seeds, guidance, steps, frames, out, model, queue)
            stripes = [stripe_stats(read_frames(p)) for p in paths["stripes"]]
            shapes = [shape_stats(read_frames(p), "red") for p in paths["shape"]]
            label = f"renders, guidance {guidance:g}, {steps} steps" + "".join(
                f", {k} {v}" for k, v in (queue or {}).items()
            )
            rows.append(summary_row(label, stripes, shapes))
            details[label] = {
                "seconds": round(time.monotonic() - began, 1),
                "shape_present": [s["present"] for s in shapes],
                "shape_step_cv": [round(s["cv"], 2) for s in shapes],
                "stripe_same_direction": [s["same_direction"] for s in stripes],
            }
    return "\n".join(rows) + "\n\nper seed: " + json.dumps(details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stripes", help="MP4 of a vertical-stripes prompt")
    parser.add_argument("--shape", help="MP4 of a coloured-shape prompt")
    parser.add_argument("--colour", default="red", help="the shape's colour name")
    parser.add_argument("--label", default="video")
    parser.add_argument("--seeds", type=int, default=0, help="render this many seeds per prompt and summarise")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0], help="guidance scales to render with")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--model", default="builtin-video", help="model name or pipeline directory to render with")
    parser.add_argument("--block-stride", type=int, default=1, help="steps between frame blocks entering the queue")
    parser.add_argument("--context-frames", type=int, default=1, help="neighbour frames each block attends to")
    args = parser.parse_args()
    if args.seeds:
        queue = {"block_stride": args.block_stride, "context_frames": args.context_frames}
        print(evaluate(args.seeds, args.guidance, args.steps, args.frames, 64, args.model, queue))
    elif args.stripes and args.shape:
        print(report(args.stripes, args.shape, args.colour, args.label))
    else:
        parser.error("give --stripes and --shape, or --seeds N")


if __name__ == "__main__":
    main()
