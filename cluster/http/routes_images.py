"""OpenAI-compatible ``POST /v1/images/generations``: one image job, answered when it is done.

``prompt``, ``size`` ("WxH"), ``n`` (1), ``response_format`` ("b64_json" or "url"), ``model`` (a built-in
model or a pipeline folder the service can read) and any image spec field (``seed``, ``steps`` or
``num_inference_steps``, ``guidance_scale``, ``negative_prompt``, ``parallel``...)."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request

from cluster.http import replica
from cluster.http.auth import IdempotencyKey, TenantOf
from cluster.http.errors import ApiError
from cluster.http.openai_fields import spec_fields
from cluster.http.routes_jobs import base_url, submit_job
from cluster.http.views import json_body, result_path
from cluster.store import FINAL_STATES

router = APIRouter(prefix="/v1/images", tags=["openai"])
OWN = ("n", "response_format", "size", "priority")
FORMATS = ("b64_json", "url")


@router.post("/generations", summary="Generate an image (OpenAI images API)")
async def generate(
    request: Request, tenant: TenantOf, idempotency_key: IdempotencyKey = None
) -> dict:
    body = await json_body(request)
    if "prompt" not in body:
        raise ApiError(422, "prompt", "missing: the text to render")
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise ApiError(422, "n", f"only n=1 is served (one job per image; submit several), got {n!r}")
    response_format = body.get("response_format") or "b64_json"
    if response_format not in FORMATS:
        raise ApiError(422, "response_format", f"expected one of {', '.join(FORMATS)}, got {response_format!r}")
    spec = {"job": "image", **spec_fields(body, OWN)}
    backend = replica.backend()
    record = await submit_job(request, tenant, spec, body.get("priority", 0), idempotency_key)
    while record["state"] not in FINAL_STATES:
        await asyncio.sleep(0.2)
        record = await backend.call("get", record["id"], tenant["name"])
    if record["state"] != "succeeded":
        raise ApiError(500, "job", f"job {record['id']} {record['state']}: {record['error'] or ''}", "server_error")
    if response_format == "url":
        item = {"url": f"{base_url(request)}/v1/jobs/{record['id']}/result"}
    else:
        item = {"b64_json": base64.b64encode(result_path(record).read_bytes()).decode()}
    return {"created": int(time.time()), "data": [{**item, "revised_prompt": record["spec"].get("prompt")}], "id": record["id"]}
