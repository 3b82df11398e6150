"""The service's Prometheus metrics, through Ray's metrics API (``ray.util.metrics``): Ray exports them on each
node's metrics endpoint (``ray.nodes()[i]["MetricsExportPort"]``, what a Prometheus scrapes), prefixed ``ray_``.

- ``tessera_queue_length{priority}``: jobs waiting to run (queued or paused) at each priority;
- ``tessera_jobs{state}``: jobs in the store in each state;
- ``tessera_unit_seconds{kind,unit}``: seconds between two progress units of a running job (a denoising step,
  a video's queue tick), as a histogram; a segment's first unit is left out (its time includes the set-up);
- ``tessera_worker_busy_seconds_total{pool,worker}``: seconds each worker spent in a job's calls (set-up, units,
  snapshots, decode), a counter: ``rate()`` over a window is the worker's utilisation;
- ``tessera_bytes_exchanged_total{strategy}``: bytes the workers of a job's group sent each other, by the parallel
  strategy the segment ran (patch: halos, K/V, GroupNorm sums; sequence: diffusers' all-to-alls; steps: ParaStep's
  noise; frames: stage-to-stage activations; CFG partners' noise included in their strategy's).

The controller refreshes the two gauges from the store every few seconds (its watchdog's beat), the segment
runner observes every unit and, for each segment that ends with its workers' reports (``segment``), the last two
from the job's metadata.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

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
        self.busy = Counter(
            "tessera_worker_busy_seconds",
            "Seconds each worker spent in a job's calls (set-up, units, snapshots, decode); rate() is its utilisation",
            tag_keys=("pool", "worker"),
        )
        self.exchanged = Counter(
            "tessera_bytes_exchanged",
            "Bytes the workers of a job's group sent each other, by parallel strategy",
            tag_keys=("strategy",),
        )
        self._priorities: set[int] = set()
        self._busy_seen: dict[tuple[str, int], tuple[object, float]] = {}
        """Each worker's busy seconds as last reported (its process id with them: a restarted worker counts anew)."""

    def refresh(self, by_state: dict[str, int], waiting_by_priority: dict[int, int]) -> None:
        """Set the gauges from the store's counts (a priority that has no waiting job any more reads 0)."""
        for state in STATES:
            self.jobs.set(by_state.get(state, 0), tags={"state": state})
        self._priorities |= set(waiting_by_priority)
        for priority in self._priorities:
            self.queue.set(waiting_by_priority.get(priority, 0), tags={"priority": str(priority)})

    def unit(self, kind: str, unit: str, seconds: float) -> None:
        self.units.observe(seconds, tags={"kind": kind, "unit": unit})

    def segment(self, pool: str, workers: list[int], metadata: dict) -> None:
        """Count what a finished segment's workers report in its metadata (``metadata["workers"]``, in the order of
        ``workers``, their global indices): the growth of each one's busy seconds (a worker reports its total since
        it started, so work a stopped segment did is counted at that worker's next report) and the bytes they sent
        each other, under the segment's strategy."""
        sent = 0
        for worker, summary in zip(workers, metadata.get("workers") or ()):
            sent += sum((summary.get("bytes_sent_by_peer") or {}).values())
            if "busy_s" not in summary:
                continue
            key, now = (pool, worker), (summary.get("pid"), summary["busy_s"])
            pid, before = self._busy_seen.get(key, (now[0], 0.0))
            grown = now[1] - before if pid == now[0] and now[1] >= before else now[1]
            self._busy_seen[key] = now
            if grown > 0:
                self.busy.inc(grown, tags={"pool": pool, "worker": str(worker)})
        if sent > 0 and metadata.get("strategy"):
            self.exchanged.inc(sent, tags={"strategy": str(metadata["strategy"])})
