"""Wan 2.2's second guidance weight (``guidance_scale_2``: the low-noise expert's steps, below the boundary
timestep, as ``WanPipeline`` weighs them): one block on one worker equals the pipeline called with it; 2 stages,
whose queue holds blocks on both sides of the boundary in one tick, equal one worker; the spec refuses it, naming the
field, where it would weigh nothing."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import one_block_reference
from _tiny_wan22 import save_tiny_wan_two_experts
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import check_two_stages_equal_one_worker, render_session
from _wan22_workers import NEGATIVE, PROMPT, SIZE

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

ONE_BLOCK = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, frames=8, block_frames=8,
                 context_frames=0, steps=4, seed=11, guidance_scale=3.0, guidance_scale_2=1.5)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wan22-g2")
    return {"a14b": str(save_tiny_wan_two_experts(root / "a14b")), "wan21": str(save_tiny_wan_pipeline(root / "wan21"))}


@torch.no_grad()
def test_one_block_equals_the_pipeline_with_guidance_scale_2(dirs, tmp_path):
    from diffusers import WanPipeline

    got = render_session(0, 1, dirs["a14b"], str(tmp_path), ONE_BLOCK)
    (tmp_path / "one").mkdir()
    one_weight = render_session(0, 1, dirs["a14b"], str(tmp_path / "one"), dict(ONE_BLOCK, guidance_scale_2=None))
    reference, pipe, initial = one_block_reference(dirs["a14b"], 2, SIZE, 11)
    assert type(reference) is WanPipeline
    expected = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=pipe.video_frames(2),
        num_inference_steps=4, guidance_scale=3.0, guidance_scale_2=1.5, latents=initial, output_type="latent",
        return_dict=False,
    )[0]
    diff = (got["latents"][0] - expected).abs().max().item()
    print(f"Wan 2.2 A14B, guidance_scale_2=1.5 vs WanPipeline: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(one_weight["latents"][0], expected, atol=1e-3)  # the low-noise steps' weight matters
    assert got["report"]["guidance_scale_2"] == 1.5


def test_two_stages_equal_one_worker(dirs, tmp_path):
    video = dict(ONE_BLOCK, frames=24, block_frames=8, context_frames=4)  # 3 blocks, one step apart in the queue
    check_two_stages_equal_one_worker(dirs["a14b"], str(tmp_path), video, blocks=3)


def test_refused_where_it_would_weigh_nothing(dirs):
    one = {"strategy": "none", "degree": 1}
    spec = VideoSpec.from_dict(dict(ONE_BLOCK, model=dirs["a14b"], parallel=one))
    assert spec.guidance_scale_2 == 1.5 and spec.placed(spec.model, 1).guidance_scale_2 == 1.5
    for fields, words in (
        (dict(model=dirs["wan21"]), "this model has one"),
        (dict(model=dirs["a14b"], guidance_scale=1.0), "runs no unconditional branch"),
        (dict(model=dirs["a14b"], guidance_scale_2="2"), "expected"),
        (dict(model=dirs["a14b"], guidance_scale_2=-1.0), "must be in"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(ONE_BLOCK, parallel=one, **fields))
        assert err.value.field == "guidance_scale_2" and words in str(err.value), str(err.value)
