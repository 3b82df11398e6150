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
    (8, 8, 64, 4),  # one block of 8 frames: nothing to pipeline, the whole video split
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
