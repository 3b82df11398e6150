"""A video job's HLS stream: its finished blocks playable while it renders, read by the real ffprobe.

The segments themselves (no Ray): each block remuxed to MPEG-TS equals the same block cut from the joined video,
byte for byte, so a player that follows the playlist across the job's publication reads on without a break.
Then through a real Ray Serve application and controller (one of each for the module): a multi-block video job
of the built-in video model, paused by a more urgent job once its playlist lists a block, is read by ffprobe
through the playlist (bearer header, relative segment URIs) while it is provably not ended; resumed and done,
its playlist ends (ENDLIST) and ffprobe reads every frame. Another tenant's playlist and segment answer 404, a
job that is not a video is refused naming why, and the events stream announces each block.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
import ray

from cluster.client import Client
from cluster.http.app import start, stop
from cluster.http.settings import HttpSettings
from cluster.http.video_stream import playlist, segment_bytes, video_stream
from cluster.jobs import parse_job
from cluster.jobs.video import block_directory
from cluster.outputs import partial_directory
from cluster.tenants import TokenStore
from pipelines.video_blocks import BlockFileWriter
from runtime.pool import PoolConfig

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


def _ffprobe(url: str, token: str | None = None) -> dict:
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
        assert _ffprobe(str(whole))["nb_read_frames"] == "15"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def farm(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("http-stream")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"), checkpoint_every=100)
    tokens = TokenStore(root / "state" / "jobs.sqlite")
    farm = {"client": client, "a": tokens.create("studio-a")[1], "b": tokens.create("studio-b")[1]}
    url = start(HttpSettings(port=_free_port(), output_root=str(root / "outputs")))
    farm["url"] = url
    farm["http"] = {
        name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {farm[name]}"}, timeout=120)
        for name in ("a", "b")
    }
    yield farm
    for session in farm["http"].values():
        session.close()
    stop()
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _wait(what, check, timeout_s: float = 120, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(what)


def _listed(text: str) -> list[tuple[float, str]]:
    lines = text.splitlines()
    return [
        (float(line[8:].rstrip(",")), lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("#EXTINF:")
    ]


def _events(http: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


@needs_ffprobe
def test_a_paused_video_plays_through_its_playlist_then_plays_whole_when_done(farm):
    a, b = farm["http"]["a"], farm["http"]["b"]
    video = a.post("/v1/jobs", json={"spec": VIDEO}).json()
    playlist_url = f"/v1/jobs/{video['id']}/stream.m3u8"
    first = _wait("a finished block", lambda: _listed(a.get(playlist_url).text))
    holder = b.post("/v1/jobs", json={"spec": HOLDER, "priority": 10})  # pauses the video for its worker
    assert holder.status_code == 201, holder.text
    holder = holder.json()
    try:
        ended = ("paused", "succeeded", "failed")
        state = _wait(
            "the video paused", lambda: {a.get(f"/v1/jobs/{video['id']}").json()["state"]} & set(ended)
        )
        assert state == {"paused"}, (
            f"the video is {state} instead of paused: it ended before the pause took effect"
        )
        reply = a.get(playlist_url)
        assert reply.status_code == 200 and reply.headers["content-type"] == "application/vnd.apple.mpegurl"
        text = reply.text
        listed = _listed(text)
        assert len(listed) >= len(first) and len(listed) < 8, text  # paused before its last block
        assert [uri for _, uri in listed] == [f"stream/{i}.ts" for i in range(len(listed))]
        assert all(seconds == 2 / 8 for seconds, _ in listed)
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
        assert "#EXT-X-TARGETDURATION:1" in text and "#EXT-X-MEDIA-SEQUENCE:0" in text
        probe = _ffprobe(farm["url"] + playlist_url, farm["a"])
        assert (probe["codec_name"], probe["width"], probe["height"]) == ("h264", 32, 32)
        assert int(probe["nb_read_frames"]) == 2 * len(listed), probe
        assert a.get(f"/v1/jobs/{video['id']}").json()["state"] == "paused"  # read before the job ended
        served = a.get(f"/v1/jobs/{video['id']}/stream/0.ts")
        assert served.status_code == 200 and served.headers["content-type"] == "video/mp2t"
        # another tenant's job is unknown; a segment not finished is not there; an image job has no stream
        for path in (playlist_url, f"/v1/jobs/{video['id']}/stream/0.ts"):
            refused = b.get(path)
            assert refused.status_code == 404 and refused.json()["error"]["field"] == "job_id", refused.text
        assert httpx.get(farm["url"] + playlist_url).status_code == 401
        missing = a.get(f"/v1/jobs/{video['id']}/stream/{len(listed)}.ts")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "index", missing.text
        image = b.get(f"/v1/jobs/{holder['id']}/stream.m3u8")
        assert image.status_code == 404 and image.json()["error"]["field"] == "kind", image.text
        assert "only a video job has a stream" in image.json()["error"]["message"]
    finally:
        b.post(f"/v1/jobs/{holder['id']}/cancel")
    record = farm["client"].job(video["id"]).wait(timeout_s=120)
    assert record["state"] == "succeeded", farm["client"].job(video["id"]).logs()
    assert "paused" in farm["client"].job(video["id"]).logs()
    text = a.get(playlist_url).text
    assert len(_listed(text)) == 8 and text.rstrip().endswith("#EXT-X-ENDLIST"), text
    probe = _ffprobe(farm["url"] + playlist_url, farm["a"])
    assert int(probe["nb_read_frames"]) == 16, probe
    assert (
        a.get(f"/v1/jobs/{video['id']}/stream/0.ts").content == served.content
    )  # cut from video.mp4: the same
    segments = [data for name, data in _events(a, video["id"]) if name == "segment"]
    assert [s["index"] for s in segments] == list(range(8)) and segments[0]["playlist"].endswith(playlist_url)
