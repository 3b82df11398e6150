"""``parallel.strategy=auto`` with ``degree=auto`` for a video: the scheduler's pick among the family's frames,
sequence and patch plans is the one the cost model (``parallel.cost.video``) predicts renders fastest, by the
video's length, size and the free workers; a whole-video pick places the video as one block. The job end to
end is in ``test_video_jobs.py`` (on its controller)."""

from __future__ import annotations

import pytest

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice
from parallel.cost.video import pick_video_plan, rank_video_plans
from pipelines.builtin import resolve_model
from pipelines.families.wan import WAN

CASES = [  # (frames, block_frames, side, free workers) -> what the cost model prefers there
    (8, 8, 64, 1),  # one worker: block-wise on it
    (8, 8, 256, 4),  # one block of 8 frames: nothing to pipeline, the whole video split (at 64 px, 1 worker)
    (64, 8, 128, 2),  # 8 blocks at 4x the tokens per frame: whole-video attention costs more than pipelining
]


def _spec(frames: int, block_frames: int, side: int) -> VideoSpec:
    return VideoSpec.from_dict(
        {"prompt": "x", "frames": frames, "block_frames": block_frames, "height": side, "width": side, "steps": 3,
         "parallel": {"strategy": "auto", "degree": "auto"}}
    )


def test_choice_is_the_cost_models_fastest():
    rule = CostModelDegreeRule()
    described = WAN.cost_model(resolve_model("builtin-video"), "float32")
    picked = []
    for frames, block_frames, side, free in CASES:
        spec = _spec(frames, block_frames, side)
        choice = auto_choice(spec, spec.model, free, rule)  # what the controller asks when it places the job
        plans = rank_video_plans(
            described, side, side, frames, block_frames, 3, free, max_stages=6, batch=1, device=rule.device, link=rule.link
        )
        best = pick_video_plan(plans)
        assert (choice["strategy"], choice["degree"]) == (best.strategy, best.degree), (frames, side, free)
        assert spec.auto_degree(spec.model, free, rule) == best.degree
        faster = [p for p in plans if p.degree <= best.degree and p.prediction.fits]
        assert best.render_s == min(p.render_s for p in faster)  # nothing at as few workers is predicted faster
        placed = spec.placed(spec.model, best.degree, choice)
        assert placed.parallel.strategy == best.strategy
        whole = best.strategy in ("sequence", "patch")
        assert (placed.blocks == 1) == whole or frames == block_frames
        picked.append(best.strategy)
        print(f"frames={frames} {side}px free={free}: {best.strategy} x{best.degree} ({best.render_s:.4f} s predicted)")
    assert picked[0] == "none" and picked[1] in ("sequence", "patch") and picked[2] == "frames"


def test_auto_needs_auto_degree():
    with pytest.raises(SpecError) as err:
        VideoSpec.from_dict({"prompt": "x", "frames": 8, "parallel": {"strategy": "auto", "degree": 2}})
    assert err.value.field == "parallel.degree"


def test_auto_weighs_no_whole_video_plan_past_what_validation_accepts():
    """A video longer than a whole-video job may be (``MAX_WHOLE_VIDEO_FRAMES``) gets the frame pipeline, and
    the plans it was chosen from are the frame pipeline's only; at that bound the whole-video plans are weighed."""
    from cluster.jobs.video import MAX_WHOLE_VIDEO_FRAMES

    rule = CostModelDegreeRule()
    for frames, whole in ((MAX_WHOLE_VIDEO_FRAMES, True), (MAX_WHOLE_VIDEO_FRAMES + 8, False)):
        spec = _spec(frames, 8, 32)
        choice = auto_choice(spec, spec.model, 2, rule)
        considered = {plan["strategy"] for plan in choice["considered"]}
        assert bool(considered & {"sequence", "patch"}) == whole, (frames, considered)
        assert choice["strategy"] == "frames"


def test_guided_whole_video_plans_weigh_cfg_parallel():
    """With both guidance branches, the whole-video strategies are also weighed with the branches on two halves
    of the workers (even degrees only); the pick is still the cost model's fastest, and a CFG pick places the job
    with ``parallel.cfg`` on, each branch on half the workers. Without guidance there is no such plan."""
    rule = CostModelDegreeRule()
    described = WAN.cost_model(resolve_model("builtin-video"), "float32")
    spec = VideoSpec.from_dict(
        {"prompt": "x", "frames": 8, "block_frames": 8, "height": 64, "width": 64, "steps": 3, "guidance_scale": 5.0,
         "parallel": {"strategy": "auto", "degree": "auto"}}
    )
    plans = rank_video_plans(described, 64, 64, 8, 8, 3, 4, max_stages=6, batch=2, device=rule.device, link=rule.link)
    split = [p for p in plans if p.cfg]
    assert {p.strategy for p in split} == {"sequence", "patch"}
    assert all(p.degree % 2 == 0 for p in split)
    assert not [p for p in rank_video_plans(described, 64, 64, 8, 8, 3, 4, max_stages=6, batch=1) if p.cfg]
    for free in (2, 4):
        choice = auto_choice(spec, spec.model, free, rule)
        best = pick_video_plan(
            rank_video_plans(described, 64, 64, 8, 8, 3, free, max_stages=6, batch=2, device=rule.device, link=rule.link)
        )
        assert (choice["strategy"], choice["degree"], choice["cfg"]) == (best.strategy, best.degree, best.cfg)
        assert any(plan["cfg"] for plan in choice["considered"])
        placed = spec.placed(spec.model, best.degree, choice)
        assert placed.parallel.cfg == best.cfg
        assert placed.parallel.split_degree == (best.degree // 2 if best.cfg else best.degree)
        print(f"guided, free={free}: {best.strategy} x{best.degree} cfg={best.cfg} ({best.render_s:.4f} s predicted)")
        if free == 2:  # one block, two workers: a branch each swaps one output a step, no attention traffic
            assert best.cfg and best.degree == 2


def test_auto_refuses_a_cfg_split_of_its_own():
    with pytest.raises(SpecError) as err:
        VideoSpec.from_dict(
            {"prompt": "x", "frames": 8, "guidance_scale": 5.0, "parallel": {"strategy": "auto", "degree": "auto", "cfg": True}}
        )
    assert err.value.field == "parallel.cfg" and "auto" in str(err.value)


def test_guided_frame_pipeline_weighs_a_branch_per_worker():
    """A guided video of several blocks also weighs the frame pipeline with a guidance branch per worker (2 workers,
    each rendering every block on one stage: half the batch, every op, one output swapped per work item); where
    it is the pick, the job is placed with ``parallel.cfg`` on the frame pipeline, its blocks kept. One block is
    the whole-video split's same work, and without guidance there are no branches: no such plan then."""
    rule = CostModelDegreeRule()
    described = WAN.cost_model(resolve_model("builtin-video"), "float32")
    args = (described, 256, 256, 16, 8, 3)
    plans = rank_video_plans(*args, 4, max_stages=6, batch=2, device=rule.device, link=rule.link)
    branches = [p for p in plans if p.strategy == "frames" and p.cfg]
    assert [p.degree for p in branches] == [2, 4]  # 4: a pipeline of 2 stages per branch
    stages = next(p for p in plans if p.strategy == "frames" and p.degree == 2 and not p.cfg)
    assert branches[0].render_s < stages.render_s  # 2 blocks: the stages' fill and drain, the branches' none
    assert not [p for p in rank_video_plans(*args, 4, max_stages=6, batch=1) if p.cfg]
    assert not [p for p in rank_video_plans(described, 256, 256, 8, 8, 3, 4, max_stages=6, batch=2)
                if p.strategy == "frames" and p.cfg]
    spec = VideoSpec.from_dict(
        {"prompt": "x", "negative_prompt": "blurry", "frames": 16, "block_frames": 8, "height": 256, "width": 256,
         "steps": 3, "guidance_scale": 5.0, "parallel": {"strategy": "auto", "degree": "auto"}}
    )
    choice = auto_choice(spec, spec.model, 2, rule)
    best = pick_video_plan(rank_video_plans(*args, 2, max_stages=6, batch=2, device=rule.device, link=rule.link))
    assert (choice["strategy"], choice["degree"], choice["cfg"]) == (best.strategy, best.degree, best.cfg)
    assert (best.strategy, best.degree, best.cfg) == ("frames", 2, True)
    placed = spec.placed(spec.model, best.degree, choice)
    assert (placed.parallel.strategy, placed.parallel.degree, placed.parallel.cfg, placed.blocks) == ("frames", 2, True, 2)


def test_guided_frame_pipeline_weighs_a_pipeline_per_branch():
    """On 2n free workers the guided frame pipeline is also weighed as a pipeline of n stages per guidance branch
    (batch 1 through each, the last stages swapping outputs): on 4 workers and 2 blocks, where 4 stages cannot
    run (a stage per block at most), it halves each worker's share of a work item against a branch per worker and
    is the pick, placed as ``parallel=frames, degree=4, cfg=true``; the degree follows the stages the video
    allows (at most ``max_stages`` per branch)."""
    rule = CostModelDegreeRule()
    described = WAN.cost_model(resolve_model("builtin-video"), "float32")
    args = (described, 256, 256, 16, 8, 3)
    plans = rank_video_plans(*args, 4, max_stages=6, batch=2, device=rule.device, link=rule.link)
    by_degree = {p.degree: p for p in plans if p.strategy == "frames" and p.cfg}
    assert sorted(by_degree) == [2, 4]
    two, four = by_degree[2], by_degree[4]
    assert four.prediction.strategy == "frame-pipeline" and four.prediction.degree == 2  # 2 stages per branch
    assert four.render_s < 0.75 * two.render_s
    assert not [p for p in rank_video_plans(*args, 4, max_stages=1, batch=2) if p.strategy == "frames" and p.degree > 2]
    long = rank_video_plans(described, 256, 256, 64, 8, 3, 8, max_stages=6, batch=2, device=rule.device, link=rule.link)
    assert sorted(p.degree for p in long if p.strategy == "frames" and p.cfg) == [2, 4, 6, 8]
    spec = VideoSpec.from_dict(
        {"prompt": "x", "negative_prompt": "blurry", "frames": 16, "block_frames": 8, "height": 256, "width": 256,
         "steps": 3, "guidance_scale": 5.0, "parallel": {"strategy": "auto", "degree": "auto"}}
    )
    choice = auto_choice(spec, spec.model, 4, rule)
    best = pick_video_plan(plans)
    assert (choice["strategy"], choice["degree"], choice["cfg"]) == (best.strategy, best.degree, best.cfg)
    assert (best.strategy, best.degree, best.cfg) == ("frames", 4, True)
    placed = spec.placed(spec.model, best.degree, choice)
    assert (placed.parallel.degree, placed.parallel.cfg, placed.parallel.split_degree) == (4, True, 2)
