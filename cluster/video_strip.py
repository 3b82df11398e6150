"""Strips of frames from rendered MP4s, one row per video: the README's picture of the built-in video model.

    tessera render job=video prompt="a red circle on a blue background" frames=16   # -> outputs/<id>/video.mp4
    python -m cluster.video_strip outputs/<id>/video.mp4 ... --every 2 --count 8 --thumb 96 \\
        --out docs/builtin-video-frames.png

Reads the MP4s `tessera render job=video` wrote (the real render path), so the picture shows what a user gets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def read_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of an MP4 as [H, W, 3] uint8."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        return [np.asarray(frame)[..., :3] for frame in reader]


def frame_strip(paths: list[str | Path], every: int, count: int, thumb: int, gap: int = 2) -> Image.Image:
    """Frames 0, every, 2 * every, ... (`count` of them) of each video side by side, one row per video."""
    rows = []
    for path in paths:
        frames = read_frames(path)
        picked = frames[::every][:count]
        if len(picked) < count:
            raise ValueError(
                f"{path}: {len(frames)} frames, need {(count - 1) * every + 1} for --count {count}"
            )
        tiles = [np.asarray(Image.fromarray(f).resize((thumb, thumb), Image.NEAREST)) for f in picked]
        spacer = np.full((thumb, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for tile in tiles for x in (tile, spacer)][:-1], axis=1))
    spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([x for row in rows for x in (row, spacer)][:-1], axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=2, help="take every this many frames")
    parser.add_argument("--count", type=int, default=8, help="frames per row")
    parser.add_argument("--thumb", type=int, default=96, help="shown size of a frame in pixels")
    parser.add_argument("--out", type=Path, default=Path("docs/builtin-video-frames.png"))
    args = parser.parse_args()
    strip = frame_strip(args.videos, args.every, args.count, args.thumb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
