"""A video job's finished blocks as an HLS media playlist, playable while the job renders.

A service video job publishes each finished frame block as its own MP4 in its partial output folder
(``cluster.jobs.video.block_directory``; ``pipelines.video_blocks`` writes a block's sidecar before renaming its
MP4 into place, so a block whose MP4 is there is whole and its frame count known). The playlist lists the
blocks 0..k that are all there, one segment each (``stream/<index>.ts``, relative to the playlist, so a proxy in
front works), as an EVENT playlist: segments are only ever added, and ``#EXT-X-ENDLIST`` closes it once the job
has ended. A segment is its block remuxed to MPEG-TS (``pipelines.video_ts``), cached next to the block (a
hidden partial file renamed into place) so that it is remuxed once.

When the last block is in, the blocks are joined into ``video.mp4`` and removed (publishing writes
``metadata.json`` first, ``cluster.jobs.video.VideoSpec.publish``), so a job whose metadata is published streams
the same segments cut from the joined video instead (the same packets; not cached, as the output folder is the
user's): a player that followed the job while it rendered reads on without a break, and a finished job's
playlist keeps working. Only an EVENT playlist's rules apply: ``#EXT-X-TARGETDURATION`` is the spec's block
length (or the longest segment listed: a whole-video placement, ``parallel.strategy`` auto, has one segment,
the whole video, listed only when it is done).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from cluster.http.errors import ApiError
from cluster.jobs import kind_of
from cluster.jobs.video import block_directory
from cluster.outputs import job_directory, partial_directory
from cluster.store import FINAL_STATES
from pipelines.video_blocks import block_path, count_path
from pipelines.video_ts import cut_block, remux_block

PLAYLIST_MEDIA = "application/vnd.apple.mpegurl"
SEGMENT_MEDIA = "video/mp2t"


@dataclass(frozen=True)
class Segment:
    """One finished block of the video."""

    index: int
    """The block's index (its segment's URI is ``stream/<index>.ts``)."""
    first_frame: int
    """The video's frame the block starts at."""
    frames: int
    """Frames in the block."""


@dataclass(frozen=True)
class VideoStream:
    """What a video job's stream holds at one moment."""

    job_id: str
    fps: float
    """The video's frame rate (a segment lasts frames / fps seconds)."""
    block_frames: int
    """The spec's frames per block: the target duration."""
    segments: tuple[Segment, ...]
    """The finished blocks 0..k, in order."""
    blocks: Path
    """The job's block folder (gone once the video is joined)."""
    joined: Path | None
    """The joined video.mp4 once its metadata is published (segments are then cut from it)."""
    ended: bool
    """No segment will be added: the video is joined or the job ended."""


def _block_frames(blocks: Path, index: int) -> int | None:
    """Frames of finished block ``index``: its sidecar's count when its MP4 is published, or 0 when its decoder
    held it back (a sidecar of 0 frames and no MP4: its frames come with a later block's); None when it is not
    finished (or was removed meanwhile: the video was joined)."""
    try:
        frames = int(json.loads(count_path(blocks, index).read_text())["frames"])
    except (OSError, ValueError, KeyError):
        return None
    return frames if frames == 0 or block_path(blocks, index).is_file() else None


def finished_blocks(blocks: Path) -> tuple[Segment, ...]:
    """The segments of blocks 0..k, all finished (each one's sidecar is then whole), in order; a block of no frames
    has no segment."""
    segments: list[Segment] = []
    first, index = 0, 0
    while (frames := _block_frames(blocks, index)) is not None:
        if frames:
            segments.append(Segment(index, first, frames))
        first += frames
        index += 1
    return tuple(segments)


def _joined(folder: Path) -> tuple[Path, float, tuple[Segment, ...]] | None:
    """The joined video in ``folder`` and its blocks, from its published metadata.json; None before that. The
    blocks lie where their frame counts (``block_frame_counts``, what their sidecars said) put them, as the live
    stream listed them; a video published before those were kept has blocks of ``block_frames``."""
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        blocks, block_frames, frames, fps = meta["blocks"], meta["block_frames"], meta["frames"], meta["fps"]
    except (OSError, ValueError, KeyError):
        return None
    counts = meta.get("block_frame_counts")
    if counts is None:
        counts = [max(0, min(block_frames, frames - i * block_frames)) for i in range(blocks)]
    segments, first = [], 0
    for index, count in enumerate(counts):
        if count:  # a block held back by its decoder has no segment, as when it was live
            segments.append(Segment(index, first, count))
        first += count
    return folder / "video.mp4", float(fps), tuple(segments)


def video_stream(record: dict) -> VideoStream:
    """The stream of a video job's record (its spec says where its blocks are); 404 for another kind of job,
    410 for a finished video whose output folder is gone."""
    spec, job_id = record["spec"], record["id"]
    kind = kind_of(spec).name
    if kind != "video":
        raise ApiError(
            404, "kind", f"job {job_id} is of kind {kind}: only a video job has a stream", "not_found_error"
        )
    output_dir = spec.get("output_dir", "outputs")
    blocks = block_directory(output_dir, job_id)
    fps, block_frames = float(spec["fps"]), int(spec["block_frames"])
    listed = finished_blocks(blocks)  # before the metadata: blocks removed meanwhile means it is published
    for folder in (
        partial_directory(output_dir, job_id),
        job_directory(output_dir, job_id),
    ):  # the rename's order
        joined = _joined(folder)
        if joined is not None:
            video, fps, segments = joined
            return VideoStream(job_id, fps, block_frames, segments, blocks, video, True)
    if record["state"] == "succeeded":
        raise ApiError(
            410, "outputs", f"the video of job {job_id} is gone from the output folder", "gone_error"
        )
    return VideoStream(job_id, fps, block_frames, listed, blocks, None, record["state"] in FINAL_STATES)


def playlist(stream: VideoStream) -> str:
    """The HLS media playlist of the stream's segments (URIs relative to the playlist)."""
    longest = max([stream.block_frames, *(s.frames for s in stream.segments)])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest / stream.fps))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
    ]
    for segment in stream.segments:
        lines += [f"#EXTINF:{segment.frames / stream.fps:.6f},", f"stream/{segment.index}.ts"]
    if stream.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class BlocksGone(RuntimeError):
    """The block was removed while it was read: the video was joined meanwhile (read the stream again)."""


def cached_segment(blocks: Path, index: int) -> Path:
    """Block ``index``'s MPEG-TS segment, cached next to its MP4."""
    return Path(blocks) / f"{index:07d}.ts"


def segment_bytes(stream: VideoStream, index: int) -> bytes:
    """Segment ``index`` as MPEG-TS; 404 for a block not finished yet."""
    segment = next((s for s in stream.segments if s.index == index), None)
    if segment is None:
        raise ApiError(
            404,
            "index",
            f"block {index} of job {stream.job_id} is not a finished segment ({len(stream.segments)} are)",
            "not_found_error",
        )
    if stream.joined is not None:
        try:
            return cut_block(stream.joined, segment.first_frame, segment.frames, stream.fps)
        except (OSError, RuntimeError) as err:  # the partial folder was renamed to outputs/<job-id>/ meanwhile
            raise BlocksGone(str(err)) from err
    block, cache = block_path(stream.blocks, index), cached_segment(stream.blocks, index)
    try:
        if (
            not cache.is_file() or cache.stat().st_mtime_ns < block.stat().st_mtime_ns
        ):  # none, or a rewritten block
            remux_block(block, cache, segment.first_frame, stream.fps)
        return cache.read_bytes()
    except (OSError, RuntimeError) as err:
        raise BlocksGone(str(err)) from err
