"""Every refusal as a 4xx JSON body naming the field: ``{"error": {"field", "param", "message", "type"}}``
(``param`` is the OpenAI clients' name for the field). A bad spec is the spec's own SpecError (422), a
tenant's limit 403 or 429, an unknown job (or another tenant's) 404; a missing or revoked token 401."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.errors import SpecError, TenantLimit

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal the API itself makes (a body that is not JSON, a job of another kind, no token)."""

    def __init__(self, status: int, field: str, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.kind = status, field, message, kind


def error_body(field: str, message: str, kind: str) -> dict:
    return {"error": {"type": kind, "field": field, "param": field, "message": f"{field}: {message}"}}


def error_response(status: int, field: str, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(field, message, kind), status_code=status, headers=headers)


def from_spec_error(err: SpecError) -> JSONResponse:
    """The spec's refusal (also when Ray wraps it on its way from the controller): its field and message."""
    if isinstance(err, TenantLimit):
        kind = "rate_limit_error" if err.status == 429 else "permission_error"
        return error_response(err.status, err.field, err.message, kind)
    return error_response(422, err.field, err.message)


def install(app: FastAPI) -> None:
    """The exception handlers of the app."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.field, err.message, err.kind)

    @app.exception_handler(SpecError)
    async def _spec(_: Request, err: SpecError) -> JSONResponse:
        return from_spec_error(err)

    @app.exception_handler(KeyError)
    async def _missing(_: Request, err: KeyError) -> JSONResponse:
        text = str(err.args[0]) if err.args else "not found"
        field, _, message = text.partition(": ")
        return error_response(404, field if message else "job_id", message or text, "not_found_error")

    @app.exception_handler(StarletteHTTPException)
    async def _routing(_: Request, err: StarletteHTTPException) -> JSONResponse:
        """What the router answers itself (no such route, a method a route does not take), in the same shape."""
        field = "method" if err.status_code == 405 else "path"
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return error_response(err.status_code, field, str(err.detail).lower(), kind)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": ("body",), "msg": "invalid"}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        return error_response(422, ".".join(loc) or "body", str(first.get("msg")))
