"""Finished frame blocks as files: they survive a stopped writer, and the MP4 is made from all of them."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.video_blocks import BlockFileWriter, block_path
from pipelines.video_writer import probe_mp4


def _block(value: int, frames: int = 2) -> np.ndarray:
    return np.full((frames, 16, 16, 3), value, dtype=np.uint8)


def test_blocks_survive_a_stop_and_the_mp4_holds_them_all(tmp_path):
    blocks, video = tmp_path / "blocks", tmp_path / "video.mp4"
    first = BlockFileWriter(blocks, video, fps=4, blocks=3)
    first.append(_block(10))
    first.append(_block(20))
    first.abort()  # a pause: nothing is removed
    assert block_path(blocks, 1).is_file() and not video.exists()
    resumed = BlockFileWriter(blocks, video, fps=4, blocks=3, first_block=1)  # checkpoint: 1 block done
    assert resumed.frames == 2
    resumed.append(_block(21))  # the block after the checkpoint is written again
    with pytest.raises(ValueError, match="2 of 3 frame blocks"):
        resumed.close()
    resumed.append(_block(30))
    assert resumed.close() == video and resumed.frames == 6
    assert probe_mp4(video) == {"frames": 6, "height": 16, "width": 16, "fps": 4.0}
    assert np.load(block_path(blocks, 1))[0, 0, 0, 0] == 21
    assert not list(blocks.glob(".*"))  # no partial block files left


def test_a_missing_block_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame block 0 is missing"):
        BlockFileWriter(tmp_path / "blocks", tmp_path / "video.mp4", fps=4, blocks=3, first_block=1)
