"""A video job asking for more steps than its directory's scheduler can take is refused at submit, naming
`steps`: a diffusers WanPipeline directory ships UniPC over flow sigmas, whose first two integer timesteps
coincide from 334 steps on (it would start a step late and fail its last step in the worker); the built-in
video model's flow-matching Euler takes any count."""

from __future__ import annotations

import pytest
from _tiny_wan_pipeline import save_tiny_wan_pipeline

from cluster.errors import SpecError
from cluster.jobs import parse_job

SPEC = {"job": "video", "height": 32, "width": 32, "frames": 16, "block_frames": 8, "parallel": {"degree": 2}}


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return str(save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan") / "tiny-wan"))


def test_unipc_steps_past_its_limit_are_refused_naming_steps(wan_dir):
    assert parse_job({**SPEC, "model": wan_dir, "steps": 333}).steps == 333
    with pytest.raises(SpecError) as caught:
        parse_job({**SPEC, "model": wan_dir, "steps": 334})
    assert caught.value.field == "steps"
    assert str(caught.value).startswith("steps: UniPCMultistepScheduler cannot take 334 steps")
    assert str(caught.value).endswith("use at most 333")


def test_the_builtin_video_model_takes_any_step_count():
    assert parse_job({**SPEC, "steps": 1000}).steps == 1000
