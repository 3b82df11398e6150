"""The cost model against our own measurements on this machine, figures it did not see (references.yaml
states the inputs; BENCHMARKS.md, cost-validation, the gaps)."""

from __future__ import annotations

from pipelines.cost_validation import validate

TOLERANCE = 0.15

def test_our_cpu_measurements_within_15_percent():
    checks = validate("ours-cpu-patch")
    tested = [c for c in checks if not c.calibration]
    assert len(tested) == 2
    for c in tested:
        assert abs(c.error) <= TOLERANCE, (c.strategy, c.degree, c.mode, c.reference_value, c.predicted)


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
