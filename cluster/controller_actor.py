"""The controller's Ray actor class: a thin front whose module imports neither torch nor diffusers.

Ray loads an actor's class in every process that takes a handle to it (`ray.get_actor`). With the real
`Controller` as the actor class, `tessera list`, `status`, `logs`, `wait` and `cancel` imported the whole
render stack (about 9 s of a 10 s command) to call one method. This class builds the `Controller` inside the
actor process and forwards the public API to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.controller import ControllerConfig


class ControllerActor:
    def __init__(self, config: ControllerConfig) -> None:
        from cluster.controller import Controller

        self._controller = Controller(config)

    def submit(
        self, spec: dict, priority: int = 0, client_token: str | None = None, tenant: dict | None = None
    ) -> dict:
        return self._controller.submit(spec, priority, client_token, tenant)

    def get(self, job_id: str, tenant: str | None = None) -> dict:
        return self._controller.get(job_id, tenant)

    def list(self, state: str | None = None, tenant: str | None = None) -> list[dict]:
        return self._controller.list(state, tenant)

    def cancel(self, job_id: str, tenant: str | None = None) -> dict:
        return self._controller.cancel(job_id, tenant)

    def set_priority(self, job_id: str, priority: int, tenant: dict | None = None) -> dict:
        return self._controller.set_priority(job_id, priority, tenant)

    def pools_report(self, tenant: str | None = None) -> list[dict]:
        return self._controller.pools_report(tenant)

    def logs(self, job_id: str, tenant: str | None = None) -> str:
        return self._controller.logs(job_id, tenant)

    def preview(self, job_id: str, tenant: str | None = None, since: int = -1) -> dict | None:
        return self._controller.preview(job_id, tenant, since)

    def authenticate(self, token: str | None, open_allowed: bool) -> dict | None:
        return self._controller.authenticate(token, open_allowed)

    def info(self) -> dict:
        return self._controller.info()

    def worker_busy_seconds(self) -> list[float]:
        return self._controller.worker_busy_seconds()

    def stop(self) -> None:
        self._controller.stop()
