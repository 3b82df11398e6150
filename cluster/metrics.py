"""The service's Prometheus metrics, through Ray's metrics API (``ray.util.metrics``): Ray exports them on each
node's metrics endpoint (``ray.nodes()[i]["MetricsExportPort"]``, what a Prometheus scrapes), prefixed ``ray_``.

- ``tessera_queue_length{priority}``: jobs waiting to run (queued or paused) at each priority;
- ``tessera_jobs{state}``: jobs in the store in each state;
- ``tessera_unit_seconds{kind,unit}``: seconds between two progress units of a running job (a denoising step,
  a video's queue tick), as a histogram; a segment's first unit is left out (its time includes the set-up).

The controller refreshes the two gauges from the store every few seconds (its watchdog's beat) and the segment
runner observes every unit.
"""

from __future__ import annotations

from ray.util.metrics import Gauge, Histogram

from cluster.job_states import STATES

UNIT_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Histogram buckets of a unit's seconds: a small image's step on a GPU to a large video's tick on a CPU."""


class ServiceMetrics:
    def __init__(self) -> None:
        self.queue = Gauge(
            "tessera_queue_length", "Jobs waiting to run (queued or paused), by priority", tag_keys=("priority",)
        )
        self.jobs = Gauge("tessera_jobs", "Jobs in the store, by state", tag_keys=("state",))
        self.units = Histogram(
            "tessera_unit_seconds",
            "Seconds between two progress units of a running job (steps; a video's ticks)",
            boundaries=UNIT_BOUNDARIES,
            tag_keys=("kind", "unit"),
        )
        self._priorities: set[int] = set()

    def refresh(self, by_state: dict[str, int], waiting_by_priority: dict[int, int]) -> None:
        """Set the gauges from the store's counts (a priority that has no waiting job any more reads 0)."""
        for state in STATES:
            self.jobs.set(by_state.get(state, 0), tags={"state": state})
        self._priorities |= set(waiting_by_priority)
        for priority in self._priorities:
            self.queue.set(waiting_by_priority.get(priority, 0), tags={"priority": str(priority)})

    def unit(self, kind: str, unit: str, seconds: float) -> None:
        self.units.observe(seconds, tags={"kind": kind, "unit": unit})
