"""An in-flight exchange: its work handles and the function that builds its result.

Synchronous callers wait at once; displaced patch mode keeps the ``Pending`` and waits on it in the next
step, so the transfer overlaps the compute in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class Pending:
    """Work handles of an in-flight exchange plus the function that builds its result.

    ``send_works`` are the handles of this exchange's sends when the backend gives one per operation
    (gloo); ``release_sends()`` waits on those alone and drops ``send_buffers``, so that a displaced
    step can free this worker's copy of what it sent long before the received part is used.
    """

    def __init__(
        self,
        works: list[Any],
        finish: Callable[[], Any],
        send_works: list[Any] | None = None,
        send_buffers: list[torch.Tensor] | None = None,
    ):
        self._works = works
        self._finish = finish
        self._send_works = send_works or []
        self._send_buffers = send_buffers
        self._done = False
        self._result: Any = None

    @property
    def holds_sends(self) -> bool:
        """Whether this worker still keeps buffers of this exchange's sends alive."""
        return bool(self._send_buffers)

    def release_sends(self) -> None:
        """Wait for the sends only (each completes once the peer has posted its receive) and free their
        buffers; a no-op where the backend gave one handle for the whole batch."""
        for w in self._send_works:
            w.wait()
        self._send_works = []
        if self._send_buffers is not None:
            self._send_buffers.clear()

    def wait(self) -> Any:
        if not self._done:
            self.release_sends()
            for w in self._works:
                w.wait()
            self._result = self._finish()
            self._works = []
            self._finish = None  # type: ignore[assignment]
            self._done = True
        return self._result


def done(result: Any) -> Pending:
    """A ``Pending`` that is already complete."""
    return Pending([], lambda: result)
