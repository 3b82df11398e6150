"""Block caching for UNets (``cache.mode=block-cache``): each block reuses its last output until its measured
change is due, the decisions are one device's on every worker, and a stopped job resumes (moved to two row bands)
to the uninterrupted result."""

from __future__ import annotations

import pytest
import torch

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from parallel.cache.calibrate import group_psnr
from pipelines.builtin import resolve_model
from pipelines.loading import load_pipeline
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render
from runtime.jobs.image_session import open_render_session

STEPS = 12


def _spec(threshold: float, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "height": 128,
            "width": 64,
            "steps": STEPS,
            "seed": 2,
            "cache": {"mode": "block-cache", "threshold": threshold, "interval": 6},
            "parallel": parallel or {"strategy": "none"},
        }
    )


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return load_pipeline(resolve_model("builtin-image"))


def _render(pipe, spec: RenderSpec, runs: list | None = None):
    handles = []
    if runs is not None:  # a block's first resnet runs only when the block itself does
        handles = [b.resnets[0].register_forward_hook(lambda *_, i=i: runs.append(i)) for i, b in enumerate(pipe.unet.down_blocks)]
    session = open_render_session(pipe, spec.placed(spec.model, 1))
    try:
        session.advance(STEPS)
        return session.latents(), session.finish()["cache"]
    finally:
        session.close()
        for handle in handles:
            handle.remove()


def test_blocks_are_reused_until_their_change_is_due(pipe):
    full, everything = _render(pipe, _spec(1e-9))
    assert everything["reused_steps"] == [] and everything["full_steps"] == list(range(STEPS))
    runs: list[int] = []
    cached, record = _render(pipe, _spec(0.3), runs)
    reused = record["reused_blocks"]
    assert reused and set(reused) == set(record["reused_steps"])
    assert not {0, 1, 6, 7} & set(reused)  # the warm-up and the refreshing pair run every block
    for index in range(len(pipe.unet.down_blocks)):
        skipped = sum(f"down_blocks.{index}" in names for names in reused.values())
        assert runs.count(index) == STEPS - skipped
    assert 15 < group_psnr(cached, full) < 200


def _stopped_at(pool, spec, after: int) -> dict:
    with pytest.raises(JobStopped) as stopped:
        run_render(pool, spec, progress=False, decode=False, on_step=lambda done: done < after)
    return stopped.value.checkpoint


def test_a_stopped_job_resumes_on_two_bands_to_the_uninterrupted_result(pool2):
    cached = run_render(pool2, _spec(0.3), progress=False, decode=False)
    record = cached.metadata["cache"]
    assert record["reused_steps"]
    state = _stopped_at(pool2, _spec(0.3), after=9)
    assert state["step_index"] == 6  # the state from before the last refreshing pair
    resumed = run_render(pool2, _spec(0.3, strategy="patch", degree=2, mode="sync"), progress=False, decode=False, resume=state)
    assert [w["cache_reused_steps"] for w in resumed.metadata["workers"]] == [[s for s in record["reused_steps"] if s >= 6]] * 2
    torch.testing.assert_close(resumed.latents, cached.latents, atol=1e-4, rtol=1e-4)


def test_guidance_halves_take_one_workers_decisions(pool2):
    one = run_render(pool2, _spec(0.3), progress=False, decode=False)
    split = run_render(pool2, _spec(0.3, strategy="patch", degree=2, mode="sync", cfg=True), progress=False, decode=False)
    assert [w["cache_reused_steps"] for w in split.metadata["workers"]] == [one.metadata["cache"]["reused_steps"]] * 2
    torch.testing.assert_close(split.latents, one.latents, atol=1e-4, rtol=1e-4)


def test_a_transformer_is_refused_naming_the_mode(tmp_path):
    from _tiny_pixart import save_tiny_pixart

    model = save_tiny_pixart(tmp_path / "pixart")
    with pytest.raises(SpecError) as refused:
        RenderSpec.from_dict({"model": str(model), "height": 64, "width": 64, "cache": {"mode": "block-cache"}})
    assert refused.value.field == "cache.mode"
