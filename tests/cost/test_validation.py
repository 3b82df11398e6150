"""The cost model against figures it did not see: our own 2-worker CPU measurements and DistriFusion's
published SDXL speedups (references.yaml states the inputs; BENCHMARKS.md, cost-validation, the gaps)."""

from __future__ import annotations

import pytest

from parallel.cost.validate import validate

TOLERANCE = 0.15


def test_our_cpu_measurements_within_15_percent():
    checks = validate("ours-cpu-patch")
    tested = [c for c in checks if not c.calibration]
    assert len(tested) == 2
    for c in tested:
        assert abs(c.error) <= TOLERANCE, (c.strategy, c.degree, c.mode, c.reference_value, c.predicted)


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


def test_our_cpu_training_throughput_within_15_percent():
    """One worker and two data-parallel workers: the cpu-core FLOP/s, calibrated on a 1024 px render, carries
    over to 128 px training (forward + backward = 3 forwards). The 2-stage pipeline row is not held: it is
    measured far below the model (BENCHMARKS.md, cost-validation, says what is missing)."""
    checks = validate("ours-cpu-train")
    held = [c for c in checks if c.held]
    assert {c.strategy for c in held} == {"none", "data"}
    for c in held:
        assert abs(c.error) <= TOLERANCE, (c.strategy, c.reference_value, c.predicted)
    pipeline = next(c for c in checks if c.strategy == "pipeline")
    assert pipeline.predicted > pipeline.reference_value  # the gap the notes explain, in this direction
