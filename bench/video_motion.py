"""How coherent the built-in video model's motion is, measured on the MP4s `tessera render job=video` wrote.

Not a speed benchmark: numbers that say whether "moves steadily" is true of a video, for the README's claim.

- stripes: each frame's column profile (mean over rows and channels); the shift between consecutive frames
  is the circular cross-correlation's peak. Steady motion: one sign, similar sizes.
- a coloured shape: pixels of that colour (nearest of the dataset's named colours); per frame its area and
  centroid. Coherent: present in every frame, the centroid moving by similar steps.
- flicker: mean absolute change of the frame's mean colour between consecutive frames (0-255 levels).

    python -m bench.video_motion --stripes STRIPES.mp4 --shape SHAPE.mp4 --colour red --label "run 3"
"""

from __future__ import annotations

import argparse

import numpy as np

from cluster.video_strip import read_frames
from pipelines.datasets import COLOURS


def stripe_shifts(frames: list[np.ndarray]) -> list[int]:
    """Per consecutive pair, the horizontal shift (pixels, signed) that best aligns the column profiles."""
    shifts = []
    for a, b in zip(frames, frames[1:]):
        pa = a.astype(float).mean(axis=(0, 2))
        pb = b.astype(float).mean(axis=(0, 2))
        pa, pb = pa - pa.mean(), pb - pb.mean()
        corr = np.fft.ifft(np.fft.fft(pb) * np.conj(np.fft.fft(pa))).real
        shift = int(np.argmax(corr))
        shifts.append(shift - len(pa) if shift > len(pa) // 2 else shift)
    return shifts


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


def report(stripes: str, shape: str, colour: str, label: str) -> str:
    s_frames, c_frames = read_frames(stripes), read_frames(shape)
    shifts = stripe_shifts(s_frames)
    track = shape_track(c_frames, colour)
    present = [t for t in track if t[0] > 0.01]
    steps = [
        float(np.hypot(b[1] - a[1], b[2] - a[2])) for a, b in zip(track, track[1:]) if a[0] > 0.01 and b[0] > 0.01
    ]
    dominant = max(set(np.sign(shifts)), key=list(np.sign(shifts)).count) if shifts else 0
    lines = [
        f"{label}: stripes: shifts per frame {shifts} (px); {sum(np.sign(shifts) == dominant)}/{len(shifts)} in the "
        f"dominant direction; flicker {flicker(s_frames):.1f} levels",
        f"{label}: {colour} shape: present (>1% of pixels) in {len(present)}/{len(track)} frames; area "
        f"{np.mean([t[0] for t in track]):.3f}; centroid steps {[round(x, 1) for x in steps]} px; "
        f"flicker {flicker(c_frames):.1f} levels",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stripes", required=True, help="MP4 of a vertical-stripes prompt")
    parser.add_argument("--shape", required=True, help="MP4 of a coloured-shape prompt")
    parser.add_argument("--colour", default="red", help="the shape's colour name")
    parser.add_argument("--label", default="video")
    args = parser.parse_args()
    print(report(args.stripes, args.shape, args.colour, args.label))


if __name__ == "__main__":
    main()
