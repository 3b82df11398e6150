"""What the API reads from requests and writes in responses: a JSON body, a submission's output folder, a
job record as the API shows it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import Request

from cluster.http.errors import ApiError
from cluster.jobs import kind_of, progress_total, progress_unit
from cluster.store import FINAL_STATES


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 400 naming "body" when it is not one."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")  # NaN and Infinity read as floats: the spec refuses them by name
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "body", f"not JSON: {err}") from None
    except RecursionError:  # arrays or objects nested thousands deep: no spec is
        raise ApiError(400, "body", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body", f"expected a JSON object, got {type(data).__name__}")
    return data


def place_outputs(spec: dict[str, Any], output_root: str) -> dict[str, Any]:
    """The spec with its output_dir under the service's output root: absent (or the default "outputs") is the
    root itself, a relative one is taken under it; an absolute one is left for the controller to check against
    its output roots. A non-string is left alone for the spec to refuse with the field's name."""
    output_dir = spec.get("output_dir", "outputs")
    if isinstance(output_dir, str) and output_dir.strip() and "\0" not in output_dir:
        if output_dir in ("outputs", "outputs/", "./outputs"):
            output_dir = output_root
        elif not os.path.isabs(output_dir):
            output_dir = str(Path(output_root) / output_dir)
        spec = {**spec, "output_dir": output_dir}
    return spec


def result_path(record: dict) -> Path | None:
    """The job's published file (its image or video), once it succeeded."""
    outputs = record.get("outputs") or {}
    kind = kind_of(record["spec"]).name
    path = outputs.get(kind)
    return Path(path) if record["state"] == "succeeded" and path else None


def job_view(record: dict, base: str = "") -> dict[str, Any]:
    """A job as the API shows it: the store's record, its progress in its own unit, the idempotency key as the
    client sent it (without its tenant's prefix), where to fetch its result."""
    spec = record["spec"]
    token = record.get("client_token")
    tenant = record.get("tenant", "default")
    if token is not None and token.startswith(f"{tenant}/"):
        token = token[len(tenant) + 1 :]
    view = {
        "id": record["id"],
        "object": "job",
        "kind": kind_of(spec).name,
        "state": record["state"],
        "done": record["state"] in FINAL_STATES,
        "priority": record["priority"],
        "tenant": tenant,
        "progress": {"done": record["steps_done"], "total": progress_total(spec), "unit": progress_unit(spec)},
        "steps_done": record["steps_done"],
        "attempts": record["attempts"],
        "submitted_at": record["submitted_at"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
        "error": record["error"],
        "cancel_requested": record["cancel_requested"],
        "idempotency_key": token,
        "spec": spec,
        "outputs": record["outputs"],
        "result_url": f"{base}/v1/jobs/{record['id']}/result" if result_path(record) else None,
    }
    return view
