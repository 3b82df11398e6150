"""The states a job goes through and the transitions between them, in one table.

    queued --place--> placed --start--> running --> succeeded | failed | cancelled
       ^                 |                 |  \\
       |                 v                 |   pausing (a more urgent job wants its workers)
       +---- (requeue: a segment done, a retry, the controller stopping) ---+      |
    paused <-------------- stop at a step boundary with a checkpoint ---------------+

A placed job holds workers but has not begun on them; a pausing one runs until its next step
boundary. The job store (``cluster.store``) refuses any change the table does not allow, in the
same transaction as the change, so a state read is always one the machine can be in.
"""

from __future__ import annotations

STATES = ("queued", "placed", "running", "pausing", "paused", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")
RUNNABLE = ("queued", "paused")
"""States the scheduler places jobs from."""
HOLDING_WORKERS = ("placed", "running", "pausing")
"""States in which a job holds workers; a restarted controller sends these back to the queue."""

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("placed", "cancelled", "failed"),
    "placed": ("running", "queued", "failed", "cancelled"),
    "running": ("pausing", "paused", "queued", "succeeded", "failed", "cancelled"),
    "pausing": ("paused", "queued", "succeeded", "failed", "cancelled"),
    "paused": ("placed", "cancelled", "failed"),
}
"""Each state's allowed next states; final states have none."""


def sources(target: str) -> tuple[str, ...]:
    """The states a job may reach ``target`` from."""
    if target not in STATES:
        raise ValueError(f"state: unknown state {target!r}; expected one of {STATES}")
    return tuple(state for state, targets in TRANSITIONS.items() if target in targets)
