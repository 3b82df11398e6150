"""/v1/jobs: Tessera's own job resource (any job kind, the same spec as ``Client.submit``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse

from cluster.http import replica
from cluster.http.auth import IdempotencyKey, TenantOf
from cluster.http.errors import ApiError
from cluster.http.events import job_events
from cluster.http.schema import spec_ref
from cluster.http.views import job_view, json_body, place_outputs, result_path
from cluster.jobs import JOB_KINDS
from cluster.store import FINAL_STATES, STATES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ENVELOPE = ("spec", "priority")
"""The fields of a job submission: the spec and its priority (the idempotency key is a header)."""
MAX_PAGE = 1000

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "additionalProperties": False,
                    "properties": {
                        "spec": spec_ref(),
                        "priority": {"type": "integer", "default": 0, "description": "Higher runs first."},
                    },
                }
            }
        },
    }
}


async def submit_job(request: Request, tenant: dict, spec: Any, priority: Any, key: str | None) -> dict:
    """Queue a job through the controller (which validates it); the record as the store has it."""
    settings = replica.settings()
    if isinstance(spec, dict):
        spec = place_outputs(spec, settings.output_root)
    return await replica.backend().call("submit", spec, priority, key, tenant)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("", status_code=201, openapi_extra=SUBMIT_BODY, summary="Queue a job")
async def create(
    request: Request,
    tenant: TenantOf,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    body = await json_body(request)
    unknown = sorted(set(body) - set(ENVELOPE))
    if unknown:
        raise ApiError(422, unknown[0], f"unknown field; a submission has {', '.join(ENVELOPE)} (spec fields go in spec)")
    if "spec" not in body:
        raise ApiError(422, "spec", "missing: the job's fields, e.g. {\"spec\": {\"prompt\": \"red stripes\"}}")
    record = await submit_job(request, tenant, body["spec"], body.get("priority", 0), idempotency_key)
    return JSONResponse(job_view(record, base_url(request)), status_code=201)


@router.get("", summary="List jobs")
async def list_jobs(
    request: Request,
    tenant: TenantOf,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict:
    if state is not None and state not in STATES:
        raise ApiError(422, "state", f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    if kind is not None and kind not in JOB_KINDS:
        raise ApiError(422, "kind", f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(422, "limit", f"must be in [1, {MAX_PAGE}], got {limit}")
    if offset < 0:
        raise ApiError(422, "offset", f"must be >= 0, got {offset}")
    records = await replica.backend().call("list", state, tenant["name"])
    views = [job_view(r, base_url(request)) for r in records]
    views = [v for v in views if kind is None or v["kind"] == kind]
    page = views[offset : offset + limit]
    following = offset + limit if offset + limit < len(views) else None
    return {"object": "list", "data": page, "total": len(views), "next_offset": following}


@router.get("/{job_id}", summary="A job")
async def get_job(request: Request, job_id: str, tenant: TenantOf) -> dict:
    return job_view(await replica.backend().call("get", job_id, tenant["name"]), base_url(request))


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str, tenant: TenantOf) -> dict:
    return job_view(await replica.backend().call("cancel", job_id, tenant["name"]), base_url(request))


@router.post("/{job_id}/priority", summary="Re-prioritise a job that has not ended (within the tenant's ceiling)")
async def set_priority(request: Request, job_id: str, tenant: TenantOf) -> dict:
    body = await json_body(request)
    unknown = sorted(set(body) - {"priority"})
    if unknown:
        raise ApiError(422, unknown[0], "unknown field; the body is {\"priority\": n}")
    if "priority" not in body:
        raise ApiError(422, "priority", "missing: the job's new priority, e.g. {\"priority\": 3}")
    record = await replica.backend().call("get", job_id, tenant["name"])  # a 404 first
    if record["state"] in FINAL_STATES:
        raise ApiError(409, "state", f"job {job_id} is {record['state']}: its priority no longer matters", "conflict_error")
    record = await replica.backend().call("set_priority", job_id, body["priority"], tenant)
    return job_view(record, base_url(request))


@router.get("/{job_id}/logs", response_class=PlainTextResponse, summary="A job's log")
async def job_logs(request: Request, job_id: str, tenant: TenantOf) -> PlainTextResponse:
    return PlainTextResponse(await replica.backend().call("logs", job_id, tenant["name"]))


@router.api_route("/{job_id}/result", methods=["GET", "HEAD"], summary="The job's image (PNG) or video (MP4); HTTP ranges supported")
async def job_result(request: Request, job_id: str, tenant: TenantOf) -> FileResponse:
    record = await replica.backend().call("get", job_id, tenant["name"])
    return result_file(record)


def result_file(record: dict) -> FileResponse:
    """The job's published file (Starlette's FileResponse answers Range requests with 206)."""
    path = result_path(record)
    if path is None:
        raise ApiError(409, "state", f"job {record['id']} is {record['state']}: no result yet", "conflict_error")
    if not path.is_file():
        raise ApiError(410, "outputs", f"{path.name} of job {record['id']} is gone from the output folder", "gone_error")
    media = "video/mp4" if path.suffix == ".mp4" else "image/png" if path.suffix == ".png" else None
    return FileResponse(path, media_type=media, filename=f"{record['id']}{path.suffix}")


@router.get("/{job_id}/events", summary="Server-sent events: state changes and progress until the job ends")
async def events(request: Request, job_id: str, tenant: TenantOf) -> StreamingResponse:
    backend = replica.backend()
    record = await backend.call("get", job_id, tenant["name"])  # a 404 before the stream starts
    stream = job_events(backend, record, tenant["name"], base_url(request))
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
