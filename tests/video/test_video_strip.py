"""cluster.video_strip: frames of rendered MP4s side by side, one row per video, in video order."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.video_strip import frame_strip
from pipelines.video_writer import StreamingMP4Writer


def _video(path, frames: int, shade: int):
    """A 16x16 video whose frame t is a flat grey of level 20 * t + shade (survives H.264)."""
    writer = StreamingMP4Writer(path, fps=4)
    levels = [min(255, 20 * t + shade) for t in range(frames)]
    writer.append(np.stack([np.full((16, 16, 3), level, np.uint8) for level in levels]))
    return writer.close()


def test_strip_takes_every_kth_frame_of_each_video_in_rows(tmp_path):
    a, b = _video(tmp_path / "a.mp4", 8, 10), _video(tmp_path / "b.mp4", 8, 40)
    strip = np.asarray(frame_strip([a, b], every=2, count=3, thumb=8, gap=2))
    assert strip.shape == (2 * 8 + 2, 3 * 8 + 2 * 2, 3)
    first_row = [strip[4, 4 + i * 10, 0] for i in range(3)]  # centre of each tile
    second_row = [strip[14, 4 + i * 10, 0] for i in range(3)]
    np.testing.assert_allclose(first_row, [10, 50, 90], atol=4)  # frames 0, 2, 4
    np.testing.assert_allclose(second_row, [40, 80, 120], atol=4)
    with pytest.raises(ValueError, match="count"):
        frame_strip([a], every=4, count=3, thumb=8)
