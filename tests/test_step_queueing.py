"""The coordinator queues the next step (and a job's closing calls) ahead on real Ray workers: stops
still land on step boundaries, checkpoints on exactly their steps, and the results are unchanged."""

import pytest
import torch

from cluster.jobs.image import ParallelSpec, RenderSpec
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render

STEPS = 6


def _spec(model_dir, strategy: str = "none", degree: int = 1) -> RenderSpec:
    spec = RenderSpec(
        model=str(model_dir),
        prompt="checkers",
        height=64,
        width=64,
        steps=STEPS,
        seed=3,
        guidance_scale=4.0,
        parallel=ParallelSpec(strategy=strategy, degree=degree),
    )
    spec.validate()
    return spec


@pytest.fixture(scope="module")
def straight(pool2, builtin_image_dir):
    return run_render(pool2, _spec(builtin_image_dir), progress=False)


def test_stop_lands_on_the_step_already_queued_and_resumes_exactly(pool2, builtin_image_dir, straight):
    seen: list[int] = []

    def stop_after_two(done: int) -> bool:
        seen.append(done)
        return done < 2

    with pytest.raises(JobStopped) as stopped:
        run_render(pool2, _spec(builtin_image_dir), progress=False, on_step=stop_after_two)
    # step 3 was queued before the hook saw step 2: the render stops after it, at a step boundary
    assert stopped.value.steps_done == 3 and stopped.value.checkpoint["step_index"] == 3
    assert seen == [1, 2, 3]
    resumed = run_render(pool2, _spec(builtin_image_dir), progress=False, resume=stopped.value.checkpoint)
    torch.testing.assert_close(resumed.latents, straight.latents, rtol=0, atol=1e-6)


def test_stop_asked_at_the_last_step_but_one_completes_the_render(pool2, builtin_image_dir, straight):
    result = run_render(pool2, _spec(builtin_image_dir), progress=False, on_step=lambda done: done < STEPS - 1)
    assert result.image is not None
    torch.testing.assert_close(result.latents, straight.latents, rtol=0, atol=0)


def test_checkpoints_are_taken_at_exactly_their_steps(pool2, builtin_image_dir, straight):
    states: list[dict] = []
    result = run_render(
        pool2, _spec(builtin_image_dir), progress=False, checkpoint_every=2, on_checkpoint=states.append
    )
    assert [s["step_index"] for s in states] == [2, 4]
    torch.testing.assert_close(result.latents, straight.latents, rtol=0, atol=0)
    resumed = run_render(pool2, _spec(builtin_image_dir), progress=False, resume=states[0])
    torch.testing.assert_close(resumed.latents, straight.latents, rtol=0, atol=1e-6)


def test_last_call_hook_runs_once_with_everything_queued(pool2, builtin_image_dir, straight):
    calls: list[int] = []
    result = run_render(pool2, _spec(builtin_image_dir), progress=False, on_last_call=lambda: calls.append(1))
    assert calls == [1]
    assert result.image is not None and result.metadata["timings"]["decode_s"] > 0
    assert result.image.shape == straight.image.shape
    # a 2-worker group must leave its process group first: no early hand-back there
    group_calls: list[int] = []
    run_render(
        pool2,
        _spec(builtin_image_dir, "patch", 2),
        progress=False,
        decode=False,
        on_last_call=lambda: group_calls.append(1),
    )
    assert group_calls == []
