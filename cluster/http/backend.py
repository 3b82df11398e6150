"""The controller actor as the API's replicas call it: awaitable calls, errors unwrapped from Ray's.

A SpecError (or TenantLimit) the controller raises arrives wrapped in Ray's RayTaskError, whose text carries
the controller's traceback; a KeyError is an unknown job (or another tenant's). They are raised again bare,
so the API answers with the refusal alone.
"""

from __future__ import annotations

from typing import Any

import ray

from cluster.errors import SpecError, TenantLimit
from cluster.names import CONTROLLER_NAME, NAMESPACE


class ControllerUnavailable(RuntimeError):
    """No controller answers (it died and none replaced it yet)."""


class Backend:
    def __init__(self) -> None:
        self._handle = None

    def handle(self):
        if self._handle is None:
            try:
                self._handle = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
            except ValueError as err:
                raise ControllerUnavailable("no Tessera controller runs in this Ray cluster") from err
        return self._handle

    async def call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.handle(), method).remote(*args)
        except TenantLimit as err:
            cause = getattr(err, "cause", err)
            raise TenantLimit(cause.field, cause.message, cause.status) from None
        except SpecError as err:
            cause = getattr(err, "cause", err)
            raise SpecError(cause.field, cause.message) from None
        except KeyError as err:
            raise KeyError(*getattr(err, "cause", err).args) from None
        except ray.exceptions.RayActorError as err:  # a replaced controller gets a new handle next time
            self._handle = None
            raise ControllerUnavailable(f"the controller did not answer: {err}") from None
