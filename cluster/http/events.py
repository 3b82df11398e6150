"""A job's server-sent events: ``state`` on each change of state, ``progress`` on each step (a video's tick),
``preview`` with each new preview of the latent (a PNG data URL, taken at the job's checkpoints), ``segment``
with each finished block of a video (playable at once in its HLS playlist, ``cluster.http.video_stream``),
``done`` with the final record, then the stream ends. The controller is polled (its store is the truth);
a comment line every few seconds keeps idle proxies from closing the stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from cluster.http.errors import ApiError
from cluster.http.video_stream import video_stream
from cluster.http.views import job_view

POLL_S = 0.2
"""Seconds between two reads of the job's record."""
KEEPALIVE_S = 10.0


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def preview_event(job_id: str, preview: dict) -> dict:
    image = "data:image/png;base64," + preview["png"]
    return {"id": job_id, "unit": preview["unit"], "width": preview["width"], "height": preview["height"], "image": image}


def segment_events(record: dict, listed: int, base: str) -> list[dict]:
    """The video's segments after the first ``listed`` (none for another kind of job, or a video gone)."""
    try:
        stream = video_stream(record)
    except ApiError:
        return []
    playlist = f"{base}/v1/jobs/{record['id']}/stream.m3u8"
    return [
        {
            "id": record["id"],
            "index": s.index,
            "first_frame": s.first_frame,
            "frames": s.frames,
            "seconds": s.frames / stream.fps,
            "playlist": playlist,
            "url": f"{base}/v1/jobs/{record['id']}/stream/{s.index}.ts",
        }
        for s in stream.segments[listed:]
    ]


async def job_events(backend, record: dict, tenant: str, base: str) -> AsyncIterator[bytes]:
    state, steps, shown, quiet_since = None, None, -1, time.monotonic()
    segments = 0
    while True:
        view = job_view(record, base)
        if view["state"] != state:
            state = view["state"]
            yield sse("state", {"id": view["id"], "state": state, "progress": view["progress"]})
            quiet_since = time.monotonic()
        if view["progress"]["done"] != steps:
            steps = view["progress"]["done"]
            yield sse("progress", {"id": view["id"], **view["progress"]})
            quiet_since = time.monotonic()
        if view["done"] or state in ("running", "pausing"):  # a job that ended between two polls: its last one
            preview = await backend.call("preview", record["id"], tenant, shown)
            if preview is not None:
                shown = preview["unit"]
                yield sse("preview", preview_event(view["id"], preview))
                quiet_since = time.monotonic()
        if view["kind"] == "video":
            for segment in segment_events(record, segments, base):
                segments += 1
                yield sse("segment", segment)
                quiet_since = time.monotonic()
        if view["done"]:
            yield sse("done", view)
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)
        record = await backend.call("get", record["id"], tenant)
