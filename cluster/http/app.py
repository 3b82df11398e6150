"""The HTTP API as a Ray Serve application: a FastAPI ingress whose replica calls the controller actor.

    start(HttpSettings(port=8000))   # after the controller runs (tessera serve does both)
    stop()

One replica, pinned to the node that starts it (the node of the controller's state and output folders,
which it reads results from), with no CPU reserved: it waits on the controller, it does not compute.
"""

from __future__ import annotations

import logging

import ray
from fastapi import FastAPI
from ray import serve

from cluster.http import (
    dashboard,
    errors,
    replica,
    routes_images,
    routes_jobs,
    routes_pools,
    routes_stream,
    routes_videos,
    schema,
)
from cluster.http.backend import ControllerUnavailable
from cluster.http.settings import HttpSettings

APP_NAME = "tessera-http"

api = FastAPI(
    title="Tessera",
    version="1",
    description="Render diffusion models on a Tessera pool: jobs (any kind), OpenAI-style images and videos.",
)
_routers = (routes_jobs, routes_stream, routes_images, routes_videos, routes_pools, dashboard)
for _routes in _routers:
    api.include_router(_routes.router)
errors.install(api)
schema.install(api)


@api.exception_handler(ControllerUnavailable)
async def _unavailable(_, err: ControllerUnavailable):
    return errors.error_response(503, "controller", str(err), "service_unavailable")


@api.get("/healthz", include_in_schema=False)
async def healthz() -> dict:
    return {"ok": True}


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class TesseraApi:
    def __init__(self, settings: HttpSettings) -> None:
        replica.hold(settings)


def start(settings: HttpSettings) -> str:
    """Start Serve's HTTP proxy on the settings' host and port and deploy the API; returns its URL."""
    node = f"node:{ray.util.get_node_ip_address()}"
    serve.start(
        http_options={"host": settings.host, "port": settings.port, "location": "HeadOnly"},
        logging_config={"log_level": logging.WARNING, "enable_access_log": False},
    )
    # the replica's own logging: serve.start's config covers Serve's controller and proxy, not the deployments
    deployment = TesseraApi.options(
        ray_actor_options={"num_cpus": 0, "resources": {node: 0.001}},
        logging_config={"log_level": logging.WARNING, "enable_access_log": False},
    )
    serve.run(deployment.bind(settings), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{settings.host}:{settings.port}"


def stop() -> None:
    """Take the application and Serve's proxy down (the controller keeps running)."""
    serve.shutdown()
