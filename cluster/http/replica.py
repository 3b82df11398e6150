"""What the API's replica holds: its settings and the controller's backend, set once when Serve builds it.

Module globals rather than ``app.state``: Serve runs a copy of the FastAPI app it was handed (pickled), while
the route functions, imported from these modules, read these globals in the replica's process."""

from __future__ import annotations

from cluster.http.backend import Backend
from cluster.http.settings import HttpSettings

_held: dict[str, object] = {}


def hold(settings: HttpSettings) -> None:
    _held["settings"], _held["backend"] = settings, Backend()


def settings() -> HttpSettings:
    return _held["settings"]


def backend() -> Backend:
    return _held["backend"]
