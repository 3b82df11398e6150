"""``cache.min_psnr``: the first job calibrates the cache's setting by rendering (its result within the budget of
full compute), its checkpoint carries the choice so a resumed job does not calibrate again, the service keeps it
and a later job of the same model, size, sampler and steps reuses it without rendering."""

from __future__ import annotations

import math

import pytest
import ray
import torch
from _job_outputs import job_metadata
from _tiny_flux import save_tiny_flux

from cluster.client import Client
from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from parallel.cache.calibrate import group_psnr
from pipelines.loading import load_pipeline
from runtime.jobs.image_session import open_render_session
from runtime.pool import PoolConfig

STEPS = 10


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-calibration") / "tiny-flux")


def _spec(flux_dir, min_psnr: float, **extra) -> RenderSpec:
    cache = {"mode": "first-block", "min_psnr": min_psnr}
    return RenderSpec.from_dict(
        {"model": str(flux_dir), "height": 64, "width": 48, "steps": STEPS, "seed": 3, "cache": cache, **extra}
    )


@pytest.fixture(scope="module")
def pipe(flux_dir):
    torch.set_num_threads(1)
    return load_pipeline(str(flux_dir))


def _session(pipe, spec: RenderSpec, resume=None):
    return open_render_session(pipe, spec.placed(spec.model, 1), resume)


def _full_compute(pipe, flux_dir) -> torch.Tensor:
    session = _session(pipe, RenderSpec.from_dict({"model": str(flux_dir), "height": 64, "width": 48, "steps": STEPS, "seed": 3}))
    session.advance(STEPS)
    session.close()
    return session.latents()


@pytest.mark.parametrize("budget", [30.0, 60.0])
def test_the_calibrated_job_stays_within_its_budget(pipe, flux_dir, budget):
    session = _session(pipe, _spec(flux_dir, budget))
    session.advance(STEPS)
    report = session.finish()["cache"]
    session.close()
    calibration = report["calibration"]
    measured = group_psnr(session.latents(), _full_compute(pipe, flux_dir))
    assert calibration["knob"] == "threshold" and calibration["renders"] >= 2
    if calibration["value"] is None:  # nothing met the budget: full compute
        assert math.isinf(measured) and report["reused_steps"] == []
    else:
        assert measured >= budget and measured == pytest.approx(calibration["psnr"], abs=1e-6)
        assert report["threshold"] == calibration["value"]


def test_a_budget_no_setting_meets_runs_in_full_and_says_so(pipe, flux_dir):
    # TaylorSeer's extrapolation is never within 100 dB: the job runs without a cache, and its report has the keys
    # a cached job's has (the job's metadata read reused_steps and failed after every step had run)
    session = _session(pipe, _spec(flux_dir, 100.0, cache={"mode": "taylorseer", "min_psnr": 100.0}))
    session.advance(STEPS)
    report = session.finish()["cache"]
    session.close()
    assert report["calibration"]["value"] is None
    assert report["mode"] == "none" and report["reused_steps"] == []


def test_a_resumed_job_keeps_its_checkpoints_calibration(pipe, flux_dir):
    first = _session(pipe, _spec(flux_dir, 30.0))
    first.advance(5)
    state = first.snapshot()
    first.close()
    resumed = _session(pipe, _spec(flux_dir, 30.0), resume=state)
    assert resumed.calibration.as_dict() == state["cache_calibration"]  # carried, not found again
    resumed.close()


@pytest.mark.parametrize(
    "cache, field",
    [
        ({"mode": "first-block", "min_psnr": 5}, "cache.min_psnr"),
        ({"mode": "first-block", "min_psnr": "high"}, "cache.min_psnr"),
        ({"min_psnr": 30}, "cache.min_psnr"),
        ({"mode": "first-block", "calibrated": True}, "cache.calibrated"),
    ],
)
def test_bad_budgets_are_named(flux_dir, cache, field):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"model": str(flux_dir), "height": 64, "width": 48, "cache": cache})
    assert caught.value.field == field


def test_the_service_keeps_a_calibration_for_the_next_job(ray_local, flux_dir, tmp_path):
    client = Client(state_dir=tmp_path / "state", pool=PoolConfig(workers=1, device="cpu"))
    try:
        spec = {
            "model": str(flux_dir),
            "height": 64,
            "width": 48,
            "steps": STEPS,
            "output_dir": str(tmp_path / "out"),
            "parallel": {"strategy": "none"},
            "cache": {"mode": "first-block", "min_psnr": 30.0},
        }
        first = client.submit(spec).wait(timeout_s=300)
        second = client.submit({**spec, "seed": 5}).wait(timeout_s=300)
        assert first["state"] == second["state"] == "succeeded"
        learned = job_metadata(first)["cache"]["calibration"]
        reused = job_metadata(second)["cache"]["calibration"]
        assert learned["renders"] >= 2
        assert reused["renders"] == 0 and reused["value"] == learned["value"]
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)


def test_deepcache_calibrates_its_interval_on_the_builtin_model():
    spec = RenderSpec.from_dict(
        {"height": 64, "width": 64, "steps": 12, "cache": {"mode": "deepcache", "min_psnr": 25.0}}
    ).placed("builtin-image", 1)
    session = open_render_session(load_pipeline(spec.model), spec)
    session.advance(12)
    report = session.finish()["cache"]
    session.close()
    calibration = report["calibration"]
    assert calibration["knob"] == "interval" and calibration["renders"] >= 2
    if calibration["value"] is not None:
        assert report["interval"] == calibration["value"] >= 2 and calibration["psnr"] >= 25.0
