"""The frame pipeline under CFG parallel on 4 workers (``parallel=frames, degree=4, cfg=true``; real gloo processes):
each guidance branch renders the video as a pipeline of 2 stages, whose last stages swap every model output, equal
to one worker batching both branches through the same block queue; the conditional branch decodes and writes, the
unconditional one decodes nothing; a checkpoint taken on the 2 x 2 layout resumes on one worker and one taken on one
worker resumes on 2 x 2."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from _cfg_split_workers import checkpointed_render, resumed_render
from _parallel_dist import run_ranks
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import NpyFrames, render_session
from test_frame_cfg_split import (
    WAN,
    _assert_blocks_equal,
    _split_equals_one_worker,
    other_families,
    wan_variants,
)

from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from pipelines.builtin import resolve_model

pytestmark = pytest.mark.slow

TICK = 3  # mid-render: block 0 finished, blocks 1-3 in the queue


def _fields(degree: int) -> dict:
    parallel = VideoParallelSpec("frames", degree, cfg=True) if degree > 1 else VideoParallelSpec("none", 1)
    return dict(WAN, parallel=parallel)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return str(save_tiny_wan_pipeline(tmp_path_factory.mktemp("cfg-stages") / "wan", layers=2))


def test_two_branches_of_two_stages_equal_one_worker_and_checkpoint_across_layouts(wan_dir, tmp_path):
    torch.set_num_threads(1)
    one = checkpointed_render(0, 1, wan_dir, str(tmp_path), _fields(1), TICK)
    split = run_ranks(checkpointed_render, 4, wan_dir, str(tmp_path), _fields(4), TICK, timeout=300)
    assert len(one["latents"]) == 4
    _assert_blocks_equal(split[0]["latents"], one["latents"], "2 branches x 2 stages vs 1 worker")
    assert not any(rank["latents"] for rank in split[1:])  # rank 0 writes the video
    reports = [rank["report"] for rank in split]
    assert reports[0]["frames_written"] == one["report"]["frames_written"] > 0
    assert [r["cfg"]["branch"] for r in reports] == ["cond", "cond", "uncond", "uncond"]
    assert [r["layers"] for r in reports] == [[0, 1], [1, 2], [0, 1], [1, 2]]  # each branch's own 2 stages
    assert all(r["items"] == one["report"]["items"] for r in reports)
    swapped = [sum(r["cfg"]["bytes_sent"].get("cfg", {}).values()) for r in reports]
    assert swapped[0] == swapped[2] == 0 and swapped[1] == swapped[3] > 0  # the last stages swap outputs
    assert reports[2]["decode_cpu_s"] == reports[3]["decode_cpu_s"] == 0  # the unconditional branch decodes none
    assert reports[0]["decode_cpu_s"] + reports[1]["decode_cpu_s"] > 0

    state = split[0]["state"]
    assert state["tick"] == TICK
    keyed = [{(e["layer"], e["block"], e["edge"]): e for e in s["cache"]} for s in (state, one["state"])]
    assert keyed[0].keys() == keyed[1].keys() and keyed[0]  # every stage's layers, in stage order
    for name, entry in keyed[0].items():
        assert entry["key"].shape[0] == 2  # both branches, as one worker batches them
        expected = keyed[1][name]
        torch.testing.assert_close((entry["key"], entry["value"]), (expected["key"], expected["value"]), atol=1e-4,
                                   rtol=1e-4)

    on_one = resumed_render(0, 1, wan_dir, str(tmp_path), _fields(1), state)
    _assert_blocks_equal(on_one["latents"], one["latents"], "2 x 2's checkpoint resumed on 1 worker")
    on_split = run_ranks(resumed_render, 4, wan_dir, str(tmp_path), _fields(4), one["state"], timeout=300)
    _assert_blocks_equal(on_split[0]["latents"], one["latents"], "1 worker's checkpoint resumed on 2 x 2")
    assert len(on_split[0]["latents"]) == 4 - state["blocks_finished"]


def test_the_conditional_stages_share_a_per_frame_decode(tmp_path):
    """The built-in model's per-frame VAE: the conditional branch's 2 stages each decode a share of every block, as
    2 stages without the split would; the video's frames are one worker's up to a level of rounding."""
    torch.set_num_threads(1)
    model = str(resolve_model("builtin-video"))
    fields = dict(WAN, frames=32, block_frames=8, context_frames=1, steps=2)
    one = render_session(0, 1, model, str(tmp_path), dict(fields, parallel=VideoParallelSpec("none", 1)), "cpu",
                         functools.partial(NpyFrames, str(tmp_path / "one.npy")))
    split = run_ranks(
        render_session, 4, model, str(tmp_path), dict(fields, parallel=VideoParallelSpec("frames", 4, cfg=True)),
        "cpu", functools.partial(NpyFrames, str(tmp_path / "split.npy")), timeout=300,
    )
    _assert_blocks_equal(split[0]["latents"], one["latents"], "built-in model, 2 branches x 2 stages vs 1 worker")
    reports = [rank["report"] for rank in split]
    assert reports[0]["decode_cpu_s"] > 0 and reports[1]["decode_cpu_s"] > 0  # both conditional stages decode
    assert reports[2]["decode_cpu_s"] == reports[3]["decode_cpu_s"] == 0
    frames = [np.load(run["report"]["video"]).astype(int) for run in (split[0], one)]
    assert frames[0].shape == frames[1].shape == (32, 32, 32, 3)
    assert np.abs(frames[0] - frames[1]).max() <= 1


def test_two_branches_of_two_stages_for_cogvideox_and_ltx(tmp_path):
    """The other families with a negative branch, through their own frame adapters (CogVideoX's text tokens travel
    between stages with the video's, LTX-Video's masked prompt): 2 blocks each on 2 x 2 workers equal one worker."""
    torch.set_num_threads(1)
    for name, (model, fields) in other_families(tmp_path).items():
        split = _split_equals_one_worker(name, model, fields, tmp_path, degree=4)
        assert [rank["report"]["layers"] for rank in split] == [[0, 1], [1, 2]] * 2, name


def test_two_branches_of_two_stages_for_image_to_video_and_two_experts(tmp_path):
    """Wan's image-to-video and two-expert layouts on 2 x 2 workers: the image's conditioning and the expert switch
    per step follow each branch through its stages."""
    torch.set_num_threads(1)
    for name, (model, fields) in wan_variants(tmp_path).items():
        split = _split_equals_one_worker(name, model, fields, tmp_path, degree=4)
        layers = [rank["report"]["layers"] for rank in split]
        assert layers[:2] == layers[2:] and layers[0][0] == 0 and layers[0][1] == layers[1][0], name  # 2 stages each


@pytest.mark.parametrize(
    "parallel, words",
    [
        ({"strategy": "frames", "degree": 6, "cfg": True}, "3 stages (a guidance branch on each 3 of the 6 workers)"),
        ({"strategy": "frames", "degree": 3, "cfg": True}, "an even degree"),
    ],
)
def test_a_branch_split_the_model_or_video_cannot_stage_is_refused(wan_dir, parallel, words):
    with pytest.raises(SpecError) as err:
        VideoSpec.from_dict(dict(WAN, model=wan_dir, parallel=parallel))
    assert err.value.field == "parallel.degree" and words in str(err.value)


def test_degree_auto_takes_an_even_number_of_the_free_workers(wan_dir):
    """``parallel.degree=auto`` with ``parallel.cfg=true``: a pipeline per branch of up to the stages the model and
    video allow, on an even number of the free workers; one free worker renders both branches batched."""
    spec = VideoSpec.from_dict(dict(WAN, model=wan_dir, parallel={"strategy": "frames", "degree": "auto", "cfg": True}))
    assert [spec.auto_degree(spec.model, free, None) for free in (1, 2, 3, 4, 5, 8)] == [1, 2, 2, 4, 4, 4]  # 2 layers
    one = spec.placed(spec.model, 1)
    assert (one.parallel.strategy, one.parallel.cfg, one.parallel.degree) == ("none", False, 1)
    four = spec.placed(spec.model, 4)
    assert (four.parallel.strategy, four.parallel.cfg, four.parallel.split_degree) == ("frames", True, 2)
