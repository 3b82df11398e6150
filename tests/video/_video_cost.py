"""The check the video families' cost-model tests share: strategy=auto picks the cost model's fastest plan."""

from __future__ import annotations

from cluster.jobs.video import VideoSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice
from parallel.cost.video import pick_video_plan, rank_video_plans


def check_auto_picks_the_fastest(
    family, path: str, fields: dict, cases: list[tuple[int, int]], whole: tuple[str, ...], batch: int
) -> list[str]:
    """For each (block_frames, free workers) in ``cases``: the scheduler's choice for a ``strategy=auto`` video of
    ``fields`` on ``path`` is the plan ``parallel.cost.video`` ranks fastest among the frame pipeline and the
    family's whole-video strategies ``whole`` (offered once 2 workers are free), and placing it runs that strategy.
    Returns the picks, "strategy xdegree"."""
    rule = CostModelDegreeRule()
    described = family.cost_model(path, "float32")
    factor = family.temporal_factor(path)
    picks = []
    for block_frames, free in cases:
        spec = VideoSpec.from_dict(
            {**fields, "model": path, "block_frames": block_frames, "context_frames": 0,
             "parallel": {"strategy": "auto", "degree": "auto"}}
        )
        choice = auto_choice(spec, spec.model, free, rule)
        plans = rank_video_plans(
            described, spec.height, spec.width, spec.frames // factor, block_frames // factor, spec.steps, free,
            ("frames", *whole), max_stages=spec.max_stages(), batch=batch, device=rule.device, link=rule.link,
        )
        best = pick_video_plan(plans)
        assert (choice["strategy"], choice["degree"]) == (best.strategy, best.degree), (block_frames, free)
        assert {p.strategy for p in plans} >= ({"none", *whole} if free > 1 else {"none"})
        assert spec.placed(spec.model, best.degree, choice).parallel.strategy == best.strategy
        picks.append(f"{best.strategy} x{best.degree}")
        print(f"{spec.frames} frames in blocks of {block_frames}, {free} free: {picks[-1]}")
    return picks
