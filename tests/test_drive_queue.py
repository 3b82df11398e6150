"""``runtime.jobs.driver.drive`` queues no advance past a segment's end, however many units one call runs: a video
whose ticks fit in one call (``ticks_per_call`` 4, the default of ``run_video_render``) once got a second, empty
advance queued behind its session's end ("worker 0 has no job in progress")."""

from __future__ import annotations

import pytest

import runtime.jobs.driver as driver_module
from runtime.jobs.driver import drive


class RecordingDriver:
    """A driver whose calls are recorded in order; a call's refs are what it returns."""

    queue_depth = 2

    def __init__(self, units_per_call: int) -> None:
        self.units_per_call = units_per_call
        self.calls: list[tuple] = []
        self.done = 0

    def begin(self, resume):
        self.calls.append(("begin",))
        return []

    def advance(self, units: int):
        self.calls.append(("advance", units))
        self.done += units
        return [self.done]

    def units_done(self, refs) -> int:
        return refs[0]

    def after_last(self) -> None:
        self.calls.append(("after_last",))


@pytest.mark.parametrize(
    "units_per_call, until, advances",
    [(4, 3, [3]), (4, 4, [4]), (4, 6, [4, 2]), (4, 11, [4, 4, 3]), (1, 3, [1, 1, 1]), (1, 1, [1])],
)
def test_no_advance_past_the_end(monkeypatch, units_per_call, until, advances):
    monkeypatch.setattr(driver_module, "get_all", list)  # the recording driver's refs are plain values
    driver = RecordingDriver(units_per_call)
    drive(driver, 0, until)
    assert [c[1] for c in driver.calls if c[0] == "advance"] == advances
    assert driver.calls.count(("after_last",)) == 1 and driver.calls[-1] == ("after_last",)
