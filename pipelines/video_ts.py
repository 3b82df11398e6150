"""A video's frame blocks as MPEG-TS segments for an HLS playlist: remuxed by stream copy, never re-encoded.

A service video job keeps each finished block as its own H.264 MP4 (``pipelines.video_blocks``), each starting
with a key frame, and joins them into ``video.mp4`` by stream copy when the last one is in. HLS wants segments
whose timestamps run on from one to the next: ``remux_block`` rewrites one block's MP4 as MPEG-TS (the same
packets, Annex B framing) shifted to its place in the video (``-output_ts_offset``), and ``cut_block`` takes the
same packets out of the joined video once the blocks are gone (``-copyts`` keeps the joined file's timestamps,
which are the blocks' shifted the same way). Both give the same bytes at a frame rate whose frame time the MP4's
time base holds exactly (8, 24 or 30000/1001 fps); at others a timestamp may differ by one 90 kHz tick.

MPEG-TS rather than fragmented MP4 with ``#EXT-X-MAP``: each segment is whole on its own (no shared init segment
to keep consistent across blocks written by different workers) and needs no extra muxer flags, and every HLS
player reads it. ``-avoid_negative_ts disabled``: the first block's B-frame delay puts its first decode time
before zero, and shifting it (the default) would move that block alone and overlap the next one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

TS_OUTPUT = ["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-avoid_negative_ts", "disabled", "-f", "mpegts"]


def _ffmpeg(arguments: list[str], what: str) -> bytes:
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-xerror", *arguments]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not {what}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def remux_block(block: str | Path, target: str | Path, first_frame: int, fps: float) -> Path:
    """Block ``block`` (an MP4 segment whose first frame is the video's ``first_frame``) as MPEG-TS at
    ``target``, published atomically (a temporary file in the same folder, renamed)."""
    target = Path(target)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        offset = ["-output_ts_offset", f"{first_frame / fps:.9f}"]
        _ffmpeg(["-y", "-i", str(block), *TS_OUTPUT, *offset, partial], f"remux {block} to MPEG-TS")
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def cut_block(video: str | Path, first_frame: int, frames: int, fps: float) -> bytes:
    """Frames ``first_frame`` to ``first_frame + frames`` of a video joined from blocks (one of them: its first
    frame is a key frame) as MPEG-TS bytes. The input seek lands half a frame after the block's first frame, so
    on that key frame; ``-frames:v`` stops after the block's packets."""
    seek = ["-ss", f"{(first_frame + 0.5) / fps:.9f}", "-i", str(video)]
    output = ["-frames:v", str(frames), "-copyts", *TS_OUTPUT, "pipe:1"]
    return _ffmpeg([*seek, *output], f"cut frames {first_frame}+{frames} of {video} to MPEG-TS")
