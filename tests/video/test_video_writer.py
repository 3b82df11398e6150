"""Streaming MP4: appended blocks give the expected frame count, size and frame rate; atomic publish."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.video_writer import StreamingMP4Writer, probe_mp4


def _block(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_blocks_stream_into_one_mp4(tmp_path):
    target = tmp_path / "video.mp4"
    writer = StreamingMP4Writer(target, fps=12)
    for seed in range(5):
        writer.append(_block(seed, 3, 48, 80))
        assert not target.exists()  # nothing at the final path until the video is complete
    assert writer.close() == target
    assert probe_mp4(target) == {"frames": 15, "height": 48, "width": 80, "fps": 12.0}
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_abort_leaves_nothing_and_bad_frames_are_refused(tmp_path):
    writer = StreamingMP4Writer(tmp_path / "video.mp4", fps=8)
    with pytest.raises(ValueError, match="uint8"):
        writer.append(np.zeros((2, 16, 16, 3), dtype=np.float32))
    writer.append(_block(0, 2, 16, 16))
    with pytest.raises(ValueError, match="differs"):
        writer.append(_block(1, 2, 32, 16))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
