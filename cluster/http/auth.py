"""Who is asking: the bearer token's tenant, asked of the controller (which holds the token table)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from cluster.http import replica
from cluster.http.errors import ApiError


async def tenant_of(request: Request) -> dict:
    """The tenant (``cluster.tenants.Tenant`` as a mapping) of the request's bearer token; 401 without a
    valid one, unless the API is open (a loopback bind and no token ever created: the default tenant)."""
    header = request.headers.get("authorization")
    token = None
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else header  # refused, unless open
    settings = replica.settings()
    tenant = await replica.backend().call("authenticate", token, settings.local)
    if tenant is None:
        why = "unknown or revoked token" if token is not None else "a bearer token is required"
        raise ApiError(401, "authorization", why, "authentication_error")
    return tenant


TenantOf = Annotated[dict, Depends(tenant_of)]
"""A route's tenant parameter: the caller's tenant, or a 401 before the route runs."""
IdempotencyKey = Annotated[
    str | None, Header(description="A retry with the same key (by the same tenant) returns the same job")
]
"""The Idempotency-Key header: the controller's client token."""
