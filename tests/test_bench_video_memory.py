"""bench.video_strategies' memory table logic: spreads per worker across lengths, a failed length, the heap trims'
cost and page faults, the summary."""

from __future__ import annotations

import pytest

from bench.video_models import TINY_MODELS
from bench.video_strategies import MIB, family_spreads, memory_rows, memory_summary

LENGTHS = [64, 256, 1024]


def _result(stage0: list[int], stage1: list[int], failed: int | None = None) -> dict:
    peaks = {str(n): [a * MIB, b * MIB] for n, a, b in zip(LENGTHS, stage0, stage1)}
    peaks["warm-up"] = peaks["64"]
    if failed is not None:
        peaks[str(failed)] = "RuntimeError: out of memory"
    return {"peaks": peaks, "render": {"size": 64, "block_frames": 8, "context_frames": 4}}


def test_spreads_summary_and_failures():
    wan, cog = TINY_MODELS[0], TINY_MODELS[4]
    results = {
        (wan, "default"): dict(_result([500, 510, 550], [400, 400, 404]), trims=[[96, 0.12], [0, 0.0]], faults=[51_300, 900]),
        (cog, "default"): _result([500, 500, 500], [400, 400, 400], failed=1024),
        (wan, "fixed-mmap"): _result([500, 501, 502], [400, 400, 400]),
    }
    assert family_spreads(results[wan, "default"]["peaks"], LENGTHS) == pytest.approx([10.0, 1.0])
    assert family_spreads(results[cog, "default"]["peaks"], LENGTHS) is None
    rows, notes = memory_rows(results, LENGTHS)
    assert rows[0].endswith("| 1.25 ms x 96 / - | 51k / 1k | 10.0% / 1.0% | yes |")
    assert rows[1].endswith("| failed | - | - | n/a | no |")
    assert notes == [f"- {cog.label} (default) at 1024 frames: RuntimeError: out of memory"]
    summary = memory_summary(results, LENGTHS)
    assert f"`default`: largest spread 10.0% ({wan.label}, stage 0); not every family within 10%." in summary
    assert "`fixed-mmap`: largest spread 0.4%" in summary and summary.endswith("every family within 10%.")
