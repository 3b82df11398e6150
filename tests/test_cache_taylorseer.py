"""TaylorSeer (``cache.mode=taylorseer``) through the pool: the full and predicted steps follow the job's step on
every worker, and a job stopped at a predicted step resumes (on one worker, and moved to two row bands) to the
uninterrupted result, because its Taylor factors travel in the checkpoint."""

from __future__ import annotations

import pytest
import torch
from _tiny_flux import save_tiny_flux

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from parallel.cache.calibrate import group_psnr
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render

STEPS = 10
FULL_STEPS = [0, 1, 2, 5, 8]
"""warmup_steps 2, interval 3: the steps that compute."""


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-taylorseer") / "tiny-flux")


def _spec(model_dir, order: int = 1, interval: int = 3, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "height": 64,
            "width": 48,
            "steps": STEPS,
            "seed": 3,
            "negative_prompt": "blurry",
            "true_cfg_scale": 4.0,
            "cache": {"mode": "taylorseer", "interval": interval, "order": order, "warmup_steps": 2},
            "parallel": parallel or {"strategy": "none"},
        }
    )


@pytest.fixture(scope="module")
def renders(pool2, flux_dir):
    """Full compute (interval 1) and the cached job, on one worker."""
    full = run_render(pool2, _spec(flux_dir, interval=1), progress=False, decode=False)
    cached = run_render(pool2, _spec(flux_dir), progress=False, decode=False)
    return full, cached


def test_predicted_steps_follow_the_schedule_and_stay_near_full_compute(renders):
    full, cached = renders
    assert full.metadata["cache"]["full_steps"] == list(range(STEPS))
    record = cached.metadata["cache"]
    assert record["mode"] == "taylorseer" and record["full_steps"] == FULL_STEPS
    assert record["reused_steps"] == [s for s in range(STEPS) if s not in FULL_STEPS]
    quality = group_psnr(cached.latents, full.latents)
    assert 20 < quality < 200  # extrapolated, so not equal; and not far off
    print(f"taylorseer order 1, interval 3: {quality:.1f} dB against full compute")


@pytest.mark.parametrize("resume_on", [{"strategy": "none"}, {"strategy": "patch", "degree": 2, "mode": "sync"}])
def test_a_job_stopped_at_a_predicted_step_resumes_to_the_uninterrupted_result(pool2, flux_dir, renders, resume_on):
    _, cached = renders
    with pytest.raises(JobStopped) as stopped:
        run_render(pool2, _spec(flux_dir), progress=False, decode=False, on_step=lambda done: done < 5)
    state = stopped.value.checkpoint
    assert state["step_index"] == 6 and state["step_cache"]["last_update_step"] == 5  # the state now, with factors
    resumed = run_render(pool2, _spec(flux_dir, **resume_on), progress=False, decode=False, resume=state)
    assert resumed.metadata["cache"]["reused_steps"] == [6, 7, 9]
    torch.testing.assert_close(resumed.latents, cached.latents, atol=1e-4, rtol=1e-4)


def test_guidance_halves_take_one_workers_predictions(pool2, flux_dir, renders):
    _, cached = renders
    split = run_render(pool2, _spec(flux_dir, strategy="patch", degree=2, mode="sync", cfg=True), progress=False, decode=False)
    assert [w["cache_reused_steps"] for w in split.metadata["workers"]] == [cached.metadata["cache"]["reused_steps"]] * 2
    torch.testing.assert_close(split.latents, cached.latents, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("order", [-1, 4, "1", 1.5])
def test_a_bad_order_is_refused_naming_it(flux_dir, order):
    with pytest.raises(SpecError) as refused:
        _spec(flux_dir, order=order).validate()
    assert refused.value.field == "cache.order"


def test_min_psnr_calibrates_the_interval_within_the_budget(flux_dir):
    """In one worker's session: the calibration renders, picks an interval, and the job meets the budget."""
    from pipelines.loading import load_pipeline
    from runtime.jobs.image_session import open_render_session

    torch.set_num_threads(1)
    pipe = load_pipeline(str(flux_dir))
    spec = _spec(flux_dir)
    spec.cache.min_psnr = 45.0
    session = open_render_session(pipe, spec.placed(spec.model, 1))
    session.advance(STEPS)
    report = session.finish()["cache"]
    cached = session.latents()
    session.close()
    reference = open_render_session(pipe, _spec(flux_dir, interval=1).placed(str(flux_dir), 1))
    reference.advance(STEPS)
    full = reference.latents()
    reference.close()
    calibration = report["calibration"]
    assert calibration["knob"] == "interval" and calibration["value"] >= 2 and report["reused_steps"]
    assert report["interval"] == calibration["value"]
    assert group_psnr(cached, full) >= 45.0
