"""A video job API in the shape of OpenAI's ``/v1/videos`` (which SGLang's diffusion server and vLLM-Omni
serve): create (JSON or multipart form), retrieve, download the content.

Create takes ``prompt``, ``model``, ``size`` ("WxH"), ``seconds`` (with ``fps``, the frame count) or
``num_frames``, and any video spec field (``seed``, ``num_inference_steps``, ``guidance_scale``, ``parallel``...).
A video object's ``status`` is queued, in_progress, completed, failed or cancelled; ``progress`` is 0-100."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from cluster.http import replica
from cluster.http.auth import IdempotencyKey, TenantOf
from cluster.http.errors import ApiError
from cluster.http.openai_fields import spec_fields
from cluster.http.routes_jobs import result_file, submit_job
from cluster.http.views import job_view, json_body
from cluster.jobs.video import VideoSpec

router = APIRouter(prefix="/v1/videos", tags=["openai"])
OWN = ("seconds", "num_frames", "priority", "size")
STATUS = {"queued": "queued", "paused": "queued", "succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}
"""Job states as video statuses (placed, running and pausing are in_progress)."""


TEXT_FIELDS = frozenset(
    {f.name for f in dataclasses.fields(VideoSpec) if str(f.type).split(" | ")[0] == "str"} | {"size"}
)
"""A video spec's text fields (and the OpenAI ``size``): a form's value stays text there, a prompt of "42" too."""


async def _body(request: Request) -> dict[str, Any]:
    """JSON, or a form (what the OpenAI SDK sends) whose numbers arrive as text: read as numbers, except in the
    spec's text fields."""
    if request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        return {k: _number(v) if isinstance(v, str) and k not in TEXT_FIELDS else v for k, v in form.items()}
    return await json_body(request)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _frames(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("num_frames") is not None:
        return {"frames": body["num_frames"]}
    if body.get("seconds") is None:
        return {}
    seconds, fps = _number(str(body["seconds"])), body.get("fps", 8.0)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise ApiError(422, "seconds", f"expected a positive number of seconds, got {body['seconds']!r}")
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        return {}  # the spec refuses fps by name
    return {"frames": max(1, round(seconds * fps))}


def video_object(record: dict) -> dict[str, Any]:
    view = job_view(record)
    spec = record["spec"]
    done, total = view["progress"]["done"], view["progress"]["total"]
    return {
        "id": record["id"],
        "object": "video",
        "model": spec.get("model"),
        "status": STATUS.get(record["state"], "in_progress"),
        "progress": 100 if record["state"] == "succeeded" else int(100 * done / max(total, 1)),
        "created_at": int(record["submitted_at"]),
        "completed_at": int(record["finished_at"]) if record["finished_at"] else None,
        "size": f"{spec.get('width')}x{spec.get('height')}",
        "seconds": str(spec["frames"] / spec["fps"]) if spec.get("fps") else None,
        "prompt": spec.get("prompt"),
        "error": {"message": record["error"]} if record["error"] else None,
    }


async def _video(request: Request, video_id: str, tenant: dict) -> dict:
    record = await replica.backend().call("get", video_id, tenant["name"])
    if record["spec"].get("job") != "video":
        raise KeyError(f"video_id: no video {video_id!r}")
    return record


@router.post("", summary="Create a video job")
async def create(
    request: Request, tenant: TenantOf, idempotency_key: IdempotencyKey = None
) -> dict:
    body = await _body(request)
    if "prompt" not in body:
        raise ApiError(422, "prompt", "missing: the text to render")
    spec = {"job": "video", **spec_fields(body, OWN), **_frames(body)}
    record = await submit_job(request, tenant, spec, body.get("priority", 0), idempotency_key)
    return video_object(record)


@router.get("/{video_id}", summary="A video job")
async def retrieve(request: Request, video_id: str, tenant: TenantOf) -> dict:
    return video_object(await _video(request, video_id, tenant))


@router.api_route("/{video_id}/content", methods=["GET", "HEAD"], summary="The video's MP4 (HTTP ranges supported)")
async def content(request: Request, video_id: str, tenant: TenantOf) -> FileResponse:
    return result_file(await _video(request, video_id, tenant))
