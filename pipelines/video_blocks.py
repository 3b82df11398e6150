"""Finished frame blocks kept as one small MP4 segment each, so that they survive a paused or moved video job.

A service video job can stop at any tick boundary and continue on other workers, but an MP4 encoder's
state cannot be checkpointed. So stage 0 encodes every decoded block on its own, as a complete H.264
segment ``blocks/<index>.mp4`` in the job's partial folder (tens of times smaller than the raw frames
of a smooth video), and only when the last block is in does ``close`` join the segments into the
final MP4 with ffmpeg's concat demuxer and stream copy: no re-encode, so the video's frames are the
segments' frames, bit for bit. Every segment starts with a key frame and all are encoded with the
same settings and size, which is what a stream-copy concat needs, and without B-frames: with them a
segment shorter than x264's reordering delay (Wan's first block of one frame, a short last block, a
windowed decoder's partial block) starts at another decode-time offset than the others, and the join
failed ("Non-monotonic DTS") or, worse, repeated frames (a video of 8, 3, 8 and 1 frames joined to 22).
Without them the segments of 8 frames of a rendered video took 1.4% more bytes at the same quality. The join is
checked from its packets' timing (no decode); segments it cannot join evenly (a job paused before every segment was
encoded without B-frames) are joined by a second encode instead.

Each segment's frame count is kept in a sidecar ``<index>.json``, so counting the blocks on disk
after a resume does not decode them. A block whose decoder held its frames back (LTX-Video's decode in
windows: they come with a later block's) is a sidecar of 0 frames and no segment. A block is published in this order: the old segment (if any) is
removed, the sidecar is written, the segment is written to a temporary file and renamed into place.
A crash therefore leaves a block either whole with its count or absent (a segment never exists
without its sidecar). A resumed job writes the blocks after its checkpoint again (the same frames:
the render is deterministic, and so is x264), so the blocks on disk always cover at least what the
checkpoint says is finished. Memory holds one block at most.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from pipelines.video_writer import StreamingMP4Writer


def block_path(directory: str | Path, index: int) -> Path:
    """Block ``index``'s MP4 segment."""
    return Path(directory) / f"{index:07d}.mp4"


def count_path(directory: str | Path, index: int) -> Path:
    """Block ``index``'s sidecar: its frame count and size, so that counting needs no decode."""
    return Path(directory) / f"{index:07d}.json"


def block_frame_counts(directory: str | Path) -> list[int]:
    """Each finished block's frames in ``directory``, in order, from their sidecars (0: a block its decoder held
    back, its frames in a later block's). A causal VAE's first block decodes fewer frames than the others, and a
    decode held back moves frames between blocks, so a block's frames are these, not ``block_frames``."""
    counts: list[int] = []
    while (sidecar := count_path(directory, len(counts))).is_file():
        counts.append(int(json.loads(sidecar.read_text())["frames"]))
    return counts


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _concat_line(path: Path) -> str:
    """One ``file`` line of an ffmpeg concat list (a quote in the path is closed, escaped, reopened)."""
    quoted = str(path.resolve()).replace("'", "'\\''")
    return f"file '{quoted}'\n"


def concat_segments(segments: list[Path], video_path: str | Path) -> Path:
    """Join complete MP4 segments into ``video_path`` by stream copy, published atomically."""
    import imageio_ffmpeg

    video_path = Path(video_path)
    partial = video_path.with_name(f".{video_path.name}.partial.mp4")
    listing = video_path.with_name(f".{video_path.name}.concat.txt")
    listing.write_text("".join(_concat_line(segment) for segment in segments))
    # -xerror: without it, an unreadable segment just ends the video early, and ffmpeg exits with 0
    flags = ["-y", "-nostdin", "-loglevel", "error", "-xerror"]
    inputs = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    output = ["-c", "copy", "-f", "mp4", str(partial)]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), *flags, *inputs, *output]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg concat of {len(segments)} segments failed: {result.stderr.strip()}")
        os.replace(partial, video_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        listing.unlink(missing_ok=True)
    return video_path


def even_frames(path: str | Path) -> int | None:
    """The frames of an MP4's video stream when they are evenly timed (each packet one frame period, the
    presentation times consecutive periods), read from the packets without decoding; None when not: a player or
    a constant-rate reader then holds or repeats frames, as a stream-copy join of segments with B-frames does."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
               "-c", "copy", "-f", "framemd5", "-"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    packets = [line.split(",") for line in result.stdout.splitlines() if line and not line.startswith("#")]
    times = sorted(int(packet[2]) for packet in packets)  # stream index, dts, pts, duration, size, hash
    periods = {int(packet[3]) for packet in packets}
    if len(periods) != 1 or times != [times[0] + k * next(iter(periods)) for k in range(len(times))]:
        return None
    return len(times)


def reencode_segments(segments: list[Path], video_path: str | Path, fps: float) -> Path:
    """Join MP4 segments by decoding them one at a time into one new encode (one frame in memory), published
    atomically: for segments a stream copy cannot join evenly (encoded with B-frames before every segment was
    encoded without: a job paused then and resumed now). A second lossy encode of those frames."""
    import imageio.v2 as imageio

    writer = StreamingMP4Writer(video_path, fps)
    try:
        for segment in segments:
            reader = imageio.get_reader(segment, format="FFMPEG")
            try:
                for frame in reader:
                    writer.append(frame[None])
            finally:
                reader.close()
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def join_segments(segments: list[Path], video_path: str | Path, fps: float, frames: int) -> Path:
    """Join segments holding ``frames`` frames into ``video_path``: by stream copy, kept when its frames are the
    segments' and evenly timed (``even_frames``), else re-encoded (``reencode_segments``); published atomically
    either way."""
    video_path = Path(video_path)
    copied = video_path.with_name(f".{video_path.name}.copied.mp4")
    try:
        concat_segments(segments, copied)
        if even_frames(copied) == frames:
            os.replace(copied, video_path)
            return video_path
        refused = None
    except RuntimeError as err:  # ffmpeg refused the copy ("Non-monotonic DTS"), or a segment is unreadable
        refused = err
    finally:
        copied.unlink(missing_ok=True)
    try:
        return reencode_segments(segments, video_path, fps)
    except Exception as err:
        if refused is not None:  # the copy's own error names the segment ffmpeg could not read
            raise refused from err
        raise


class BlockFileWriter:
    """The MP4 writer's interface (append, close, abort, frames) over per-block segments in ``directory``.

    ``first_block`` is the index of the next block to arrive (blocks before it are already on disk);
    ``blocks`` the job's total; ``close`` writes ``video_path`` once all of them are there."""

    def __init__(
        self, directory: str | Path, video_path: str | Path, fps: float, blocks: int, first_block: int = 0
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.video_path = Path(video_path)
        self.fps = fps
        self.blocks = blocks
        self.next_block = first_block
        self.frames = sum(self._block_info(i)["frames"] for i in range(first_block))
        """Frames in the blocks on disk that precede the next one."""
        self.frames_before = self.frames
        """Frames already on disk when this writer opened (a resumed job's): not this render's."""

    def _block_info(self, index: int) -> dict:
        """A finished block's sidecar ({"frames", "height", "width"}); a clear error if the block is absent."""
        sidecar = count_path(self.directory, index)
        if sidecar.is_file() and not block_path(self.directory, index).is_file():
            info = json.loads(sidecar.read_text())
            if info["frames"] == 0:  # a block held back by its decoder: no segment
                return info
        if not block_path(self.directory, index).is_file():
            raise FileNotFoundError(f"frame block {index} is missing from {self.directory}")
        return json.loads(sidecar.read_text())

    def append(self, frames: np.ndarray) -> None:
        """Encode the next finished block's uint8 [F, H, W, 3] frames as its own segment."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
        index = self.next_block
        block_path(self.directory, index).unlink(missing_ok=True)  # a rewrite: absent until whole again
        info = {"frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2])}
        _write_atomically(count_path(self.directory, index), json.dumps(info))
        if len(frames):  # else a block its decoder held back (its frames come with a later block's): no segment
            writer = StreamingMP4Writer(block_path(self.directory, index), self.fps)
            try:
                writer.append(frames)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        self.next_block += 1
        self.frames += len(frames)

    def close(self) -> Path:
        """Join every block's segment into the MP4 (published atomically); the segments are left to the caller."""
        if self.next_block != self.blocks:
            raise ValueError(
                f"blocks: {self.next_block} of {self.blocks} frame blocks written; the video is incomplete"
            )
        infos = [self._block_info(index) for index in range(self.blocks)]
        sizes = {(info["height"], info["width"]) for info in infos}
        if len(sizes) > 1:
            raise ValueError(f"frame blocks: sizes {sorted(sizes)} differ; one video needs one size")
        segments = [block_path(self.directory, index) for index, info in enumerate(infos) if info["frames"]]
        return join_segments(segments, self.video_path, self.fps, sum(info["frames"] for info in infos))

    def abort(self) -> None:
        """A paused or failed stage: the finished blocks stay for the job to continue from."""
