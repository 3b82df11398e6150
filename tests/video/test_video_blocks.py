"""Finished frame blocks as MP4 segments: they survive a stopped writer, they are much smaller than raw
frames, and the MP4 joined from them by stream copy holds exactly their frames."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from pipelines.video_blocks import BlockFileWriter, block_path
from pipelines.video_writer import probe_mp4

SIZES = (8, 8, 5)  # frames per block: the last block of a video may be shorter


def _block(value: int, frames: int = 2) -> np.ndarray:
    return np.full((frames, 16, 16, 3), value, dtype=np.uint8)


def _smooth(frames: int, start: int = 0, height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth synthetic video: colour gradients with a soft bright blob moving across them."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i, t in enumerate(range(start, start + frames)):
        cx, cy, radius = (0.2 + 0.03 * t) * width, (0.5 + 0.01 * t) * height, 0.15 * height
        blob = 120.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
        base = np.stack([40 + 120 * x / width, 50 + 100 * y / height, np.full_like(x, 60 + 4 * t)], -1)
        out[i] = np.clip(base + blob[..., None], 0, 255).astype(np.uint8)
    return out


def _blocks() -> list[np.ndarray]:
    starts = np.cumsum((0,) + SIZES[:-1])
    return [_smooth(frames, int(start)) for frames, start in zip(SIZES, starts)]


def _decode(path) -> np.ndarray:
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack([frame for frame in reader])  # list(reader) asks its length: inf
    finally:
        reader.close()


def _write(directory, video, blocks, first_block: int = 0) -> BlockFileWriter:
    writer = BlockFileWriter(directory, video, fps=8, blocks=len(SIZES), first_block=first_block)
    for frames in blocks:
        writer.append(frames)
    return writer


def test_blocks_survive_a_stop_and_the_mp4_holds_them_all(tmp_path):
    blocks, video = tmp_path / "blocks", tmp_path / "video.mp4"
    first = BlockFileWriter(blocks, video, fps=4, blocks=3)
    first.append(_block(10))
    first.append(_block(20))
    first.abort()  # a pause: nothing is removed
    assert block_path(blocks, 1).is_file() and not video.exists()
    resumed = BlockFileWriter(blocks, video, fps=4, blocks=3, first_block=1)  # checkpoint: 1 block done
    assert resumed.frames == 2
    resumed.append(_block(80))  # the block after the checkpoint is written again (here: other frames)
    with pytest.raises(ValueError, match="2 of 3 frame blocks"):
        resumed.close()
    resumed.append(_block(30))
    assert resumed.close() == video and resumed.frames == 6
    assert probe_mp4(video) == {"frames": 6, "height": 16, "width": 16, "fps": 4.0}
    assert abs(_decode(block_path(blocks, 1)).mean() - 80) < 2  # the rewrite replaced the old segment
    assert abs(_decode(video)[2:4].mean() - 80) < 2
    assert not list(blocks.glob(".*")) and not list(tmp_path.glob(".*"))  # no partial files left


def test_three_blocks_decode_to_their_frames_and_to_their_segments(tmp_path):
    blocks = _blocks()
    writer = _write(tmp_path / "blocks", tmp_path / "video.mp4", blocks)
    assert writer.close() == tmp_path / "video.mp4" and writer.frames == sum(SIZES)
    decoded, expected = _decode(tmp_path / "video.mp4"), np.concatenate(blocks)
    assert decoded.shape == expected.shape  # exactly the total frame count
    assert np.abs(decoded.astype(np.int16) - expected).mean() < 3  # H.264 is lossy, but close
    segments = np.concatenate([_decode(block_path(tmp_path / "blocks", i)) for i in range(len(SIZES))])
    np.testing.assert_array_equal(decoded, segments)  # stream copy: no re-encode at the end


def test_resume_gives_the_same_mp4_bytes(tmp_path):
    blocks = _blocks()
    _write(tmp_path / "ref", tmp_path / "ref.mp4", blocks).close()
    _write(tmp_path / "cut", tmp_path / "cut.mp4", blocks[:2]).abort()  # stopped with block 1 written
    resumed = _write(tmp_path / "cut", tmp_path / "cut.mp4", blocks[1:], first_block=1)  # checkpoint: 1 block
    assert resumed.frames == sum(SIZES)
    resumed.close()
    assert (tmp_path / "cut.mp4").read_bytes() == (tmp_path / "ref.mp4").read_bytes()


def test_block_segments_are_much_smaller_than_raw_frames(tmp_path):
    frames = _smooth(8)
    BlockFileWriter(tmp_path, tmp_path / "video.mp4", fps=8, blocks=1).append(frames)
    stored = sum(path.stat().st_size for path in tmp_path.iterdir())  # the segment and its sidecar
    assert stored < frames.nbytes / 5, (stored, frames.nbytes)


def test_a_missing_block_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame block 0 is missing"):
        BlockFileWriter(tmp_path / "blocks", tmp_path / "video.mp4", fps=4, blocks=3, first_block=1)
    writer = _write(tmp_path / "blocks", tmp_path / "video.mp4", _blocks())
    block_path(tmp_path / "blocks", 1).unlink()
    with pytest.raises(FileNotFoundError, match="frame block 1 is missing"):
        writer.close()
    assert not (tmp_path / "video.mp4").exists()


def test_a_failed_join_leaves_no_video(tmp_path):
    writer = _write(tmp_path / "blocks", tmp_path / "video.mp4", _blocks())
    block_path(tmp_path / "blocks", 1).write_bytes(b"not an mp4")
    with pytest.raises(RuntimeError, match="ffmpeg concat"):
        writer.close()
    assert [path.name for path in tmp_path.iterdir()] == ["blocks"]  # no video, no temp file, no list


def test_a_block_held_back_by_its_decoder_is_no_segment(tmp_path):
    """LTX-Video's decode in windows holds a block's frames back (they come with a later block's): the block is a
    sidecar of 0 frames, no segment; a resume after it counts the frames on disk; the video holds every frame."""
    blocks = _blocks()
    held = [np.zeros((0, 64, 64, 3), np.uint8), np.concatenate(blocks[:2]), blocks[2]]
    first = _write(tmp_path / "blocks", tmp_path / "video.mp4", held[:1])
    assert not block_path(tmp_path / "blocks", 0).exists() and first.frames == 0
    first.abort()
    resumed = _write(tmp_path / "blocks", tmp_path / "video.mp4", held[1:], first_block=1)
    assert resumed.frames == sum(SIZES)
    resumed.close()
    decoded, expected = _decode(tmp_path / "video.mp4"), np.concatenate(blocks)
    assert decoded.shape == expected.shape  # every frame, once
    assert np.abs(decoded.astype(np.int16) - expected).mean() < 3  # H.264 is lossy, but close


@pytest.mark.parametrize("sizes", [(1, 4, 4), (2, 4, 4), (4, 1, 4), (8, 3, 8, 1)])
def test_blocks_shorter_than_the_encoders_delay_join_to_their_frames(tmp_path, sizes):
    """Wan's first block of one frame (block_frames=4), a short block in the middle (a windowed decoder's) or at
    the end: with B-frames such segments began at another decode-time offset and the join failed or repeated
    frames (8, 3, 8, 1 frames joined to 22)."""
    starts = np.cumsum((0,) + sizes[:-1])
    blocks = [_smooth(frames, int(start)) for frames, start in zip(sizes, starts)]
    writer = BlockFileWriter(tmp_path / "blocks", tmp_path / "video.mp4", fps=8, blocks=len(sizes))
    for frames in blocks:
        writer.append(frames)
    writer.close()
    decoded = _decode(tmp_path / "video.mp4")
    segments = np.concatenate([_decode(block_path(tmp_path / "blocks", i)) for i in range(len(sizes))])
    assert decoded.shape == (sum(sizes), 64, 64, 3)
    np.testing.assert_array_equal(decoded, segments)


def _bframe_segment(path, frames: np.ndarray) -> None:
    """A segment as every one was encoded before 2026-12-05: x264's default B-frames."""
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=8, codec="libx264", quality=8,
                                pixelformat="yuv420p", macro_block_size=1)
    for frame in frames:
        writer.append_data(frame)
    writer.close()


@pytest.mark.parametrize("old_blocks", [4, 2])
def test_segments_encoded_with_b_frames_join_by_a_second_encode(tmp_path, old_blocks):
    """A job paused before every segment was encoded without B-frames (all its blocks, or the first two, resumed
    after): the stream copy would hold 22 frames for these 20, so the join re-encodes them: every frame, once."""
    import json

    from pipelines.video_blocks import count_path, even_frames

    sizes = (8, 3, 8, 1)
    starts = np.cumsum((0,) + sizes[:-1])
    blocks = [_smooth(frames, int(start)) for frames, start in zip(sizes, starts)]
    directory = tmp_path / "blocks"
    directory.mkdir()
    for index, frames in enumerate(blocks[:old_blocks]):
        _bframe_segment(block_path(directory, index), frames)
        count_path(directory, index).write_text(json.dumps({"frames": len(frames), "height": 64, "width": 64}))
    writer = BlockFileWriter(directory, tmp_path / "video.mp4", fps=8, blocks=len(sizes), first_block=old_blocks)
    for frames in blocks[old_blocks:]:
        writer.append(frames)
    video = writer.close()
    assert even_frames(video) == sum(sizes) and probe_mp4(video)["frames"] == sum(sizes)
    decoded = _decode(video)
    assert decoded.shape == (sum(sizes), 64, 64, 3)
    assert np.abs(decoded.astype(np.int16) - np.concatenate(blocks)).mean() < 3  # a second lossy encode, close
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocks", "video.mp4"]  # no temporary file left
