"""The HLS stream's test helpers shared by test_http_video_stream (segments without Ray) and test_http_api (a
paused video's playlist through the module's Serve application): the real ffprobe, and the video job."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(
    FFPROBE is None, reason="no ffprobe binary on PATH (apt-get install ffmpeg; .ci/run does)"
)
VIDEO = {
    "job": "video",
    "height": 32,
    "width": 32,
    "frames": 16,
    "block_frames": 2,
    "steps": 3,
    "seed": 3,
    "parallel": {"strategy": "frames", "degree": 2},
}
"""8 blocks of 2 frames on both workers (ticks: 8 + 3 - 1): a block is finished from tick 3 on."""
HOLDER = {"height": 256, "width": 256, "steps": 999, "seed": 1, "parallel": {"strategy": "none"}}
"""An urgent image job on one worker, cancelled by the test: while it runs, the paused video cannot resume."""


def ffprobe(url: str, token: str | None = None) -> dict:
    """ffprobe's count of the decoded frames of the playlist's video stream; a playlist without ENDLIST is
    read from its first segment, and given up after 3 reloads without a new one."""
    headers = ["-headers", f"Authorization: Bearer {token}\r\n"] if token else []
    live = ["-live_start_index", "0", "-m3u8_hold_counters", "3"] if url.endswith(".m3u8") else []
    entries = [
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,width,height,nb_read_frames",
    ]
    command = [FFPROBE, "-v", "error", *headers, *live, *entries, "-of", "json", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["streams"][0]


def wait_for(what, check, timeout_s: float = 120, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(what)


def playlist_entries(text: str) -> list[tuple[float, str]]:
    lines = text.splitlines()
    return [
        (float(line[8:].rstrip(",")), lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("#EXTINF:")
    ]
