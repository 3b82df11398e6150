"""A video job's HLS stream, its segments themselves (no Ray): each block remuxed to MPEG-TS equals the same block
cut from the joined video, byte for byte, so a player that follows the playlist across the job's publication
reads on without a break, and the segments joined play whole in the real ffprobe. The stream through HTTP (a
paused video read by ffprobe through its playlist) is in test_http_api, on that module's Serve application."""

from __future__ import annotations

import numpy as np
import pytest
from _hls import FFPROBE, VIDEO, ffprobe

from cluster.http.video_stream import playlist, segment_bytes, video_stream
from cluster.jobs import parse_job
from cluster.jobs.video import block_directory
from cluster.outputs import partial_directory
from pipelines.video_blocks import BlockFileWriter


def _video_job(tmp_path, blocks: int, frames: int, fps: float = 8.0) -> tuple:
    """A running video job's record and spec, the block writer its job would use, and ``blocks`` blocks of
    ``frames`` distinct frames to write."""
    spec = parse_job(
        {**VIDEO, "frames": blocks * frames, "block_frames": frames, "fps": fps, "output_dir": str(tmp_path)}
    )
    record = {"id": "job-1", "spec": spec.stored(), "state": "running"}
    rng = np.random.default_rng(0)
    writer = BlockFileWriter(
        block_directory(tmp_path, "job-1"), partial_directory(tmp_path, "job-1") / "video.mp4", fps, blocks
    )
    chunks = []
    for _ in range(blocks):
        base = rng.integers(0, 200, (1, 32, 32, 3))
        chunks.append((base + np.arange(frames)[:, None, None, None] * 8).astype(np.uint8))
    return record, spec, writer, chunks


@pytest.mark.parametrize("fps", [8.0, 24.0])
def test_block_segments_equal_the_same_blocks_cut_from_the_joined_video(tmp_path, fps):
    record, spec, writer, chunks = _video_job(tmp_path, blocks=3, frames=5, fps=fps)
    writer.append(chunks[0])
    first = video_stream(record)
    assert [s.frames for s in first.segments] == [5] and not first.ended
    text = playlist(first)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
    assert text.splitlines()[-2:] == [f"#EXTINF:{5 / fps:.6f},", "stream/0.ts"]
    live = [segment_bytes(first, 0)]
    for chunk in chunks[1:]:
        writer.append(chunk)
    stream = video_stream(record)
    live += [segment_bytes(stream, i) for i in (1, 2)]
    cached = block_directory(tmp_path, "job-1") / "0000002.ts"  # next to its block, remuxed once
    remuxed = cached.stat().st_mtime_ns
    assert segment_bytes(stream, 2) == live[2] and cached.stat().st_mtime_ns == remuxed
    writer.close()
    meta = {"blocks": 3, "block_frames": 5, "frames": 15, "fps": fps}
    spec.publish(
        "job-1", None, meta
    )  # the blocks are joined and removed; the segments are cut from video.mp4
    assert not partial_directory(tmp_path, "job-1").exists()
    joined = video_stream(record)
    assert joined.joined is not None and joined.ended and "#EXT-X-ENDLIST" in playlist(joined)
    assert [segment_bytes(joined, i) for i in range(3)] == live
    if FFPROBE:  # the segments joined play as the whole video
        whole = tmp_path / "whole.ts"
        whole.write_bytes(b"".join(live))
        assert ffprobe(str(whole))["nb_read_frames"] == "15"


def test_a_block_held_back_by_its_decoder_has_no_segment(tmp_path):
    """A block whose frames come with a later block's (LTX-Video's decode in windows) is finished with no
    segment: the playlist lists the later blocks by their own index, and the held block's segment is a 404."""
    from cluster.http.errors import ApiError

    record, _, writer, chunks = _video_job(tmp_path, blocks=3, frames=5)
    writer.append(chunks[0][:0])
    assert video_stream(record).segments == ()
    writer.append(np.concatenate(chunks[:2]))
    stream = video_stream(record)
    assert [(s.index, s.first_frame, s.frames) for s in stream.segments] == [(1, 0, 10)]
    assert playlist(stream).splitlines()[-1] == "stream/1.ts"
    assert segment_bytes(stream, 1)
    with pytest.raises(ApiError, match="block 0 of job job-1 is not a finished segment"):
        segment_bytes(stream, 0)


def test_blocks_of_uneven_frames_are_cut_where_they_were_live(tmp_path):
    """A causal VAE's first block decodes fewer frames (Wan: 1 + 4(n - 1)), and HunyuanVideo's and LTX-Video's
    decoders hold blocks back and hand their frames on with a later one: once joined, each segment is still cut
    where its block lay, not at index x block_frames (which replayed and dropped frames)."""
    record, spec, writer, _ = _video_job(tmp_path, blocks=5, frames=8)
    rng = np.random.default_rng(1)
    counts = [5, 8, 0, 16, 8]  # block 2 held back: its frames come with block 3's
    for count in counts:
        base = rng.integers(0, 200, (1, 32, 32, 3))
        writer.append((base + np.arange(count)[:, None, None, None] * 8).astype(np.uint8))
    live = video_stream(record)
    expected = [(0, 0, 5), (1, 5, 8), (3, 13, 16), (4, 29, 8)]
    assert [(s.index, s.first_frame, s.frames) for s in live.segments] == expected
    live_bytes = [segment_bytes(live, s.index) for s in live.segments]
    writer.close()
    spec.publish("job-1", None, {"blocks": 5, "block_frames": 8, "frames": 37, "fps": 8.0})
    joined = video_stream(record)
    assert joined.joined is not None
    assert [(s.index, s.first_frame, s.frames) for s in joined.segments] == expected
    assert playlist(joined).replace("#EXT-X-ENDLIST\n", "") == playlist(live)
    assert [segment_bytes(joined, s.index) for s in joined.segments] == live_bytes


def test_a_segment_read_as_the_video_is_published_is_read_again(tmp_path):
    """The joined video is found in the partial folder, which publishing renames to outputs/<job-id>/ before the cut
    reads it: that is ``BlocksGone`` (the route reads the stream again), not a server error."""
    from dataclasses import replace

    from cluster.http.video_stream import BlocksGone

    record, spec, writer, chunks = _video_job(tmp_path, blocks=2, frames=4)
    for chunk in chunks:
        writer.append(chunk)
    writer.close()
    spec.publish("job-1", None, {"blocks": 2, "block_frames": 4, "frames": 8, "fps": 8.0})
    moved = replace(video_stream(record), joined=partial_directory(tmp_path, "job-1") / "video.mp4")
    with pytest.raises(BlocksGone):
        segment_bytes(moved, 1)
    assert segment_bytes(video_stream(record), 1)  # read again: cut from outputs/<job-id>/video.mp4
