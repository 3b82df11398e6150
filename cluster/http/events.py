"""A job's server-sent events: ``state`` on each change of state, ``progress`` on each step (a video's tick),
``preview`` with each new preview of the latent (a PNG data URL, taken at the job's checkpoints), ``done`` with
the final record, then the stream ends. The controller is polled (its store is the truth);
a comment line every few seconds keeps idle proxies from closing the stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from cluster.http.views import job_view

POLL_S = 0.2
"""Seconds between two reads of the job's record."""
KEEPALIVE_S = 10.0


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def preview_event(job_id: str, preview: dict) -> dict:
    image = "data:image/png;base64," + preview["png"]
    return {"id": job_id, "unit": preview["unit"], "width": preview["width"], "height": preview["height"], "image": image}


async def job_events(backend, record: dict, tenant: str, base: str) -> AsyncIterator[bytes]:
    state, steps, shown, quiet_since = None, None, -1, time.monotonic()
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
        if view["done"]:
            yield sse("done", view)
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)
        record = await backend.call("get", record["id"], tenant)
