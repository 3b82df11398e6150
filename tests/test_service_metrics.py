"""The service metrics' accounting of a finished segment (``cluster.metrics.ServiceMetrics.segment``): a worker's
busy seconds counted by their growth between its reports, anew after a restart; bytes summed over the group under
its strategy. What reaches Ray's metrics endpoint is tests/test_http_api.py's."""

from __future__ import annotations

from cluster.metrics import ServiceMetrics


class _Recorded:
    """Stands in for a ray.util.metrics Counter here: what was counted, by tags."""

    def __init__(self) -> None:
        self.counted: dict[tuple, float] = {}

    def inc(self, value: float, tags: dict[str, str]) -> None:
        key = tuple(sorted(tags.items()))
        self.counted[key] = self.counted.get(key, 0.0) + value


def _worker(pid: int, busy_s: float, sent: dict[int, int] | None = None) -> dict:
    summary = {"pid": pid, "busy_s": busy_s}
    if sent is not None:
        summary["bytes_sent_by_peer"] = sent
    return summary


def test_busy_seconds_grow_by_each_report_and_bytes_add_up_per_strategy():
    metrics = ServiceMetrics()
    metrics.busy, metrics.exchanged = _Recorded(), _Recorded()
    metrics.segment("cpu", [0, 1], {"strategy": "patch", "workers": [_worker(7, 2.0, {1: 100}), _worker(8, 3.0, {0: 50})]})
    metrics.segment("cpu", [1], {"strategy": "none", "workers": [_worker(8, 4.5)]})  # worker 1 again: 1.5 s more
    metrics.segment("cpu", [0], {"strategy": "none", "workers": [_worker(9, 0.5)]})  # worker 0 restarted (new pid)
    metrics.segment("cpu", [0], {"segment_end_tick": 3})  # a segment boundary without reports counts nothing
    assert metrics.busy.counted == {
        (("pool", "cpu"), ("worker", "0")): 2.5,
        (("pool", "cpu"), ("worker", "1")): 4.5,
    }
    assert metrics.exchanged.counted == {(("strategy", "patch"),): 150}
