"""TeaCache-style caching (``cache.mode=teacache``): a reusing step runs no transformer block, the decision is one
device's on every worker (row bands, CFG halves, Ulysses shards), a stopped job resumes to the uninterrupted result,
and ``cache.min_psnr`` calibrates its threshold within the budget."""

from __future__ import annotations

import pytest
import torch
from _tiny_flux import save_tiny_flux
from _tiny_pixart import save_tiny_pixart

from cluster.jobs.image import RenderSpec
from parallel.cache.calibrate import group_psnr
from parallel.cache.first_block import transformer_blocks
from pipelines.loading import load_pipeline
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render
from runtime.jobs.image_session import open_render_session

STEPS = 10


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-teacache") / "tiny-flux")


def _spec(model_dir, threshold: float, true_cfg_scale: float = 4.0, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "height": 64,
            "width": 48,
            "steps": STEPS,
            "seed": 3,
            "negative_prompt": "blurry",
            "true_cfg_scale": true_cfg_scale,
            "cache": {"mode": "teacache", "threshold": threshold},
            "parallel": parallel or {"strategy": "none"},
        }
    )


def _render_in_process(model_dir, spec: RenderSpec, calls: list | None = None):
    torch.set_num_threads(1)
    pipe = load_pipeline(str(model_dir))
    handles = []
    if calls is not None:
        blocks = transformer_blocks(pipe.transformer)
        # the blocks' attention (a block's own hooks fire even when diffusers' hook replaced its forward)
        attentions = (blocks[0].attn, blocks[-1].attn)
        handles = [a.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, a in enumerate(attentions)]
    session = open_render_session(pipe, spec.placed(str(model_dir), 1))
    try:
        session.advance(spec.steps)
        return session.latents(), session.finish()["cache"]
    finally:
        session.close()
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def measured(flux_dir):
    """Every step in full (a threshold every change exceeds), its changes, and a threshold that reuses some."""
    full, record = _render_in_process(flux_dir, _spec(flux_dir, 1e-9))
    changes = sorted(record["changes"].values())
    return full, record, changes[len(changes) // 2] * 1.5


def test_a_reusing_step_runs_no_block(flux_dir, measured):
    full, everything, threshold = measured
    assert everything["full_steps"] == list(range(STEPS)) and len(everything["changes"]) == STEPS - 1
    calls: list[int] = []
    cached, record = _render_in_process(flux_dir, _spec(flux_dir, threshold), calls)
    assert record["mode"] == "teacache" and record["reused_steps"]
    assert sorted(record["full_steps"] + record["reused_steps"]) == list(range(STEPS))
    assert calls.count(0) == calls.count(1) == len(record["full_steps"])  # neither the first block nor the last
    assert 15 < group_psnr(cached, full) < 200


def test_the_modulated_input_falls_back_to_the_block_input(tmp_path):
    """PixArt modulates inside its blocks: the change is the first block's input's, and steps are still reused."""
    model_dir = save_tiny_pixart(tmp_path / "tiny-pixart")
    spec = RenderSpec.from_dict(
        {"model": str(model_dir), "height": 64, "width": 64, "steps": STEPS, "seed": 1, "cache": {"mode": "teacache", "threshold": 1e-9}}
    )
    _, everything = _render_in_process(model_dir, spec)
    threshold = sorted(everything["changes"].values())[-1] * 2.5
    spec.cache.threshold = threshold
    _, record = _render_in_process(model_dir, spec)
    assert record["reused_steps"] and record["full_steps"][:2] == [0, 1]


def _stopped_at(pool, spec, after: int) -> dict:
    with pytest.raises(JobStopped) as stopped:
        run_render(pool, spec, progress=False, decode=False, on_step=lambda done: done < after)
    return stopped.value.checkpoint


def test_a_stopped_job_resumes_on_two_bands_to_the_uninterrupted_result(pool2, flux_dir, measured):
    _, _, threshold = measured
    cached = run_render(pool2, _spec(flux_dir, threshold), progress=False, decode=False)
    state = _stopped_at(pool2, _spec(flux_dir, threshold), after=6)
    assert state["step_index"] in cached.metadata["cache"]["full_steps"]  # the state from just before a full step
    resumed = run_render(pool2, _spec(flux_dir, threshold, strategy="patch", degree=2, mode="sync"), progress=False, decode=False, resume=state)
    reused = cached.metadata["cache"]["reused_steps"]
    assert [w["cache_reused_steps"] for w in resumed.metadata["workers"]] == [[s for s in reused if s >= state["step_index"]]] * 2
    torch.testing.assert_close(resumed.latents, cached.latents, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "parallel",
    [{"strategy": "patch", "degree": 2, "mode": "sync", "cfg": True}, {"strategy": "sequence", "degree": 2}],
    ids=["cfg-halves", "ulysses"],
)
def test_guidance_halves_and_sequence_shards_take_one_workers_decisions(pool2, flux_dir, measured, parallel):
    _, _, threshold = measured
    one = run_render(pool2, _spec(flux_dir, threshold), progress=False, decode=False)
    split = run_render(pool2, _spec(flux_dir, threshold, **parallel), progress=False, decode=False)
    assert one.metadata["cache"]["reused_steps"]
    assert [w["cache_reused_steps"] for w in split.metadata["workers"]] == [one.metadata["cache"]["reused_steps"]] * 2
    torch.testing.assert_close(split.latents, one.latents, atol=1e-4, rtol=1e-4)


def test_min_psnr_calibrates_the_threshold_within_the_budget(flux_dir, measured):
    full, _, _ = measured
    spec = _spec(flux_dir, 0.08)
    spec.cache.min_psnr = 40.0
    cached, record = _render_in_process(flux_dir, spec)
    calibration = record["calibration"]
    assert calibration["knob"] == "threshold" and calibration["renders"] >= 2 and calibration["value"] is not None
    assert record["reused_steps"] and record["threshold"] == pytest.approx(calibration["value"])
    assert group_psnr(cached, full) >= 40.0
