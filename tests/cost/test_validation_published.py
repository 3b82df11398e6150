"""The cost model against DistriFusion's published SDXL 3840x3840 speedups on A100s (references.yaml
states the inputs; BENCHMARKS.md, cost-validation, the gap at 8 GPUs)."""

from __future__ import annotations

import pytest

from pipelines.cost_validation import validate

TOLERANCE = 0.15


@pytest.fixture(scope="module")
def distrifusion():
    return {c.degree: c for c in validate("distrifusion-sdxl-3840")}


@pytest.mark.parametrize("degree", [2, 4])
def test_distrifusion_speedups_within_15_percent(distrifusion, degree):
    c = distrifusion[degree]
    assert abs(c.error) <= TOLERANCE, (degree, c.reference_value, c.predicted)


def test_distrifusion_8_gpus_is_the_known_overestimate(distrifusion):
    """At 8 GPUs the model predicts more than the published 6.1x: it treats overlapped NCCL transfers as
    free and keeps per-GPU efficiency constant as patches shrink (BENCHMARKS.md, cost-validation, says
    why). Held here so that a change that widens the gap, or flips its sign, is seen."""
    c = distrifusion[8]
    assert 0.0 < c.error <= 0.25, c.predicted
    speedups = [distrifusion[n].predicted for n in (2, 4, 8)]
    assert speedups == sorted(speedups)
