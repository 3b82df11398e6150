"""Stream video frames into an MP4 as they are produced, and publish the file atomically.

Frames are appended to a hidden temporary file next to the target through imageio's ffmpeg writer
(the ffmpeg binary of imageio-ffmpeg), so only one block of frames is ever in memory; ``close``
finishes the file and renames it into place, so a reader never sees a half-written video, and
``abort`` removes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class StreamingMP4Writer:
    """Append uint8 [F, H, W, 3] frame blocks; ``close()`` renames the finished file to ``path``."""

    def __init__(self, path: str | Path, fps: float, quality: int = 8) -> None:
        """H.264 without B-frames: a service job's video is per-block segments joined by stream copy, which B-frames
        break (``pipelines.video_blocks``), and one encoder setting for every video keeps a job's video and a
        direct render's the same frames."""
        import imageio.v2 as imageio

        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial.mp4")
        self.fps = fps
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._writer = imageio.get_writer(
            self.partial,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=1,
            output_params=["-bf", "0"],
        )

    def append(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
        size = (frames.shape[1], frames.shape[2])
        if self.size is None:
            if size[0] % 2 or size[1] % 2:
                raise ValueError(f"frames: H.264 needs even height and width, got {size}")
            self.size = size
        elif size != self.size:
            raise ValueError(f"frames: size {size} differs from the video's {self.size}")
        for frame in frames:
            self._writer.append_data(frame)
        self.frames += len(frames)

    def close(self) -> Path:
        """Finish the MP4 and move it to ``path``."""
        self._writer.close()
        if self.frames == 0:
            self.partial.unlink(missing_ok=True)
            raise ValueError("no frames were written")
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.partial.unlink(missing_ok=True)


def probe_mp4(path: str | Path) -> dict:
    """Frame count (decoded, not the header's estimate), size and fps of an MP4."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        count = 0
        shape = None
        for frame in reader:
            count += 1
            shape = frame.shape
    finally:
        reader.close()
    return {"frames": count, "height": shape[0], "width": shape[1], "fps": meta["fps"]}
