"""The cost model against DistriFusion's published SDXL 3840x3840 speedups on A100s (references.yaml
states the inputs; BENCHMARKS.md, cost-validation, the figures), with and without the efficiency falloff."""

from __future__ import annotations

import pytest

from parallel.cost.specs import load_specs
from pipelines.cost_validation import fit_half_efficiency, validate

TOLERANCE = 0.15
REFERENCE = "distrifusion-sdxl-3840"


@pytest.fixture(scope="module")
def distrifusion():
    return {c.degree: c for c in validate(REFERENCE)}


@pytest.mark.parametrize("degree", [2, 4, 8])
def test_distrifusion_speedups_within_15_percent(distrifusion, degree):
    c = distrifusion[degree]
    assert abs(c.error) <= TOLERANCE, (degree, c.reference_value, c.predicted)


def test_the_falloff_closes_the_8_gpu_gap(distrifusion):
    """Without the efficiency falloff (every kernel at the device's efficiency, however small a band makes
    it) the model is 21.7% over the published 6.1x at 8 GPUs; with specs.yaml's constant it is within 5%,
    and every row is nearer its reference than without it."""
    before = {c.degree: c for c in validate(REFERENCE, half_efficiency_flops=0.0)}
    assert 0.15 < before[8].error <= 0.25, before[8].predicted
    assert abs(distrifusion[8].error) <= 0.05, distrifusion[8].predicted
    for n in (2, 4, 8):
        assert abs(distrifusion[n].error) < abs(before[n].error), n
    speedups = [distrifusion[n].predicted for n in (2, 4, 8)]
    assert speedups == sorted(speedups)


def test_the_a100_constant_is_the_least_squares_fit_to_the_table():
    """specs.yaml's a100-80gb falloff constant is the one pipelines.cost_validation fits to the three rows
    (held to 2%, so that a change to the model that moves the optimum shows up here)."""
    fitted = fit_half_efficiency(REFERENCE)
    assert load_specs().device("a100-80gb").half_efficiency_flops == pytest.approx(fitted, rel=0.02)
