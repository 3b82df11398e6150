"""An ordered log of one pipeline stage's ring and compute events: the witness that transfers overlap compute.

Off by default (``FramePipeline(trace=True)`` turns it on); when on, each event is one list append.
Events are ``(kind, index)`` in the order they happened on this stage. ``index`` is the work item's
position in the schedule, which is also the sequence number of the message carrying it on every
channel (each stage sends and receives exactly one message per item) in a run started from the first
tick; after a resume from a checkpoint message numbers restart at 0 while item positions do not. Kinds:

- ``compute_start`` / ``compute_end``: the stage's layers on item ``index``;
- ``post:<channel>`` / ``wait:<channel>``: the receive of message ``index`` posted / waited on;
- ``send:<channel>`` / ``send_wait:<channel>``: the send of message ``index`` posted / waited on.

Ordering, unlike durations, does not depend on how loaded the machine is, so tests assert on it.
"""

from __future__ import annotations

from collections.abc import Iterator


class FrameTrace:
    """The ordered events of one stage."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def add(self, kind: str, index: int) -> None:
        self.events.append((kind, index))

    def position(self, kind: str, index: int) -> int:
        """Where event ``(kind, index)`` sits in the log; ValueError if it never happened."""
        return self.events.index((kind, index))

    def has(self, kind: str, index: int) -> bool:
        return (kind, index) in self.events

    def indices(self, kind: str) -> list[int]:
        """Indices of the events of one kind, in the order they happened."""
        return [i for k, i in self.events if k == kind]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
