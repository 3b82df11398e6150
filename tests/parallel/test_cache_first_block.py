"""First Block Cache (diffusers' hooks, the decision summed over the job's group) on a tiny Flux transformer:
with nothing reused it equals the uncached loop exactly; under row bands at 2 and 3 gloo ranks every rank takes
one device's decisions and the stitched latent equals one device's cached latent."""

from __future__ import annotations

import _cache_workers as C
import pytest
import torch
from _parallel_dist import run_ranks

_runs: dict[int, list] = {}


@pytest.fixture(scope="module")
def ref() -> dict:
    torch.set_num_threads(1)
    return C.one_device()


def banded(world: int, threshold: float) -> list:
    if world not in _runs:
        _runs[world] = run_ranks(C.banded, world, threshold, timeout=240)
    return _runs[world]


def test_a_threshold_nothing_passes_equals_the_uncached_loop(ref):
    assert ref["all_full"]["report"]["reused_steps"] == []
    assert torch.equal(ref["all_full"]["latent"], ref["plain"])
    assert torch.equal(ref["after_close"], ref["plain"])  # close() took every hook off


def test_a_threshold_among_the_changes_reuses_some_steps_after_the_warmup(ref):
    report = ref["cached"]["report"]
    assert report["reused_steps"], report
    assert len(report["full_steps"]) + len(report["reused_steps"]) == C.STEPS
    assert {0, 1} <= set(report["full_steps"])  # warmup_steps=2
    err = (ref["cached"]["latent"] - ref["plain"]).abs().max().item()
    assert 0 < err < 0.5, err


@pytest.mark.parametrize("world", [2, 3])
def test_bands_take_one_devices_decisions_and_equal_it(ref, world):
    expected = ref["cached"]["report"]
    for rank_result in banded(world, ref["threshold"]):
        report = rank_result["report"]
        assert (report["full_steps"], report["reused_steps"]) == (expected["full_steps"], expected["reused_steps"])
        for step, change in expected["changes"].items():
            assert report["changes"][step] == pytest.approx(change, rel=1e-4, abs=1e-6)
        torch.testing.assert_close(rank_result["latent"], ref["cached"]["latent"], atol=1e-4, rtol=1e-4)


def test_each_band_alone_would_measure_another_change(ref):
    """Why the change is summed over the group: a band's own change differs from the image's."""
    whole = ref["all_full"]["report"]["changes"]
    ranks = banded(2, ref["threshold"])
    differences = [abs(r["local_changes"][s] - whole[s]) for r in ranks for s in whole]
    assert max(differences) > 1e-3, differences
