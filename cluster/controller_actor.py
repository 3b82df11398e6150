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

    def submit(self, spec: dict, priority: int = 0, client_token: str | None = None) -> dict:
        return self._controller.submit(spec, priority, client_token)

    def get(self, job_id: str) -> dict:
        return self._controller.get(job_id)

    def list(self, state: str | None = None) -> list[dict]:
        return self._controller.list(state)

    def cancel(self, job_id: str) -> dict:
        return self._controller.cancel(job_id)

    def logs(self, job_id: str) -> str:
        return self._controller.logs(job_id)

    def info(self) -> dict:
        return self._controller.info()

    def worker_busy_seconds(self) -> list[float]:
        return self._controller.worker_busy_seconds()

    def stop(self) -> None:
        self._controller.stop()
