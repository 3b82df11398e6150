"""/v1/pools: the controller's pools and their workers (where each runs, the job it holds, its busy seconds)."""

from __future__ import annotations

from fastapi import APIRouter

from cluster.http import replica
from cluster.http.auth import TenantOf

router = APIRouter(prefix="/v1/pools", tags=["pools"])


@router.get("", summary="The pools and their workers")
async def list_pools(tenant: TenantOf) -> dict:
    """Each pool (name, device kind) with its workers: node, pid, device, the job it holds (another tenant's job
    reads "busy") and ``busy_s``, its seconds spent rendering since it started (two readings make its
    utilisation; null when the worker is inside a long call)."""
    pools = await replica.backend().call("pools_report", tenant["name"])
    return {"object": "list", "data": pools}
