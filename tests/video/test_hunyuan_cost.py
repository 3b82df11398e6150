"""The HunyuanVideo family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the real prompt encoding: one branch, the
prompt at the pipeline's length), so ``parallel.strategy=auto`` picks among its frames and patch plans by the
cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cluster.jobs.video import VideoSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice
from parallel.cost.profile import profile_model
from parallel.cost.video import pick_video_plan, rank_video_plans
from pipelines.families.hunyuanvideo import HUNYUANVIDEO

HEIGHT, WIDTH, FRAMES = 48, 32, 12  # 3 latent frames of 6 x 4


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny-hunyuanvideo"))


@torch.no_grad()
def test_the_description_costs_what_the_pipeline_runs(hunyuan_dir):
    pipe = HUNYUANVIDEO.load(hunyuan_dir, "float32", "cpu")
    text, _, _ = pipe.conditioning("red stripes", "", 6.0)
    channels, rows, cols = pipe.latent_shape(HEIGHT, WIDTH)
    latent_frames = pipe.latent_frames(FRAMES, "frames")
    adapter = HUNYUANVIDEO.band_adapter(pipe.transformer, (channels, latent_frames, rows, cols))
    latent = torch.zeros(1, channels, latent_frames, rows, cols)
    counter = FlopCounterMode(display=False)
    # the math attention, as on the meta device: torch's CPU flash kernel has no FLOP formula to count
    with sdpa_kernel(SDPBackend.MATH), counter:
        cond = adapter.conditions(torch.tensor([500.0]), text)
        adapter.forward(latent, cond)
    described = HUNYUANVIDEO.cost_model(hunyuan_dir, "float32")
    assert described.kind == "video-mmdit" and described.batch == 1  # embedded guidance: one branch
    assert (described.text_len, described.text_dim) == tuple(text["prompt_embeds"].shape[1:])
    assert described.extra["pooled_projections"] == text["pooled_prompt_embeds"].shape[1]
    assert described.latent_shape(1, HEIGHT, WIDTH, FRAMES - 3) == tuple(latent.shape)  # 4k+1 frames: 3 latent
    prof = profile_model(described, HEIGHT, WIDTH, FRAMES - 3)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert prof.flops == counter.get_total_flops() and prof.param_bytes == 4 * params
    assert prof.tokens == latent_frames * (rows // 2) * (cols // 2) and prof.text_tokens == described.text_len


def test_auto_picks_the_cost_models_fastest_of_frames_and_bands(hunyuan_dir):
    rule = CostModelDegreeRule()
    described = HUNYUANVIDEO.cost_model(hunyuan_dir, "float32")
    for frames, block_frames, free in ((FRAMES, 4, 2), (FRAMES, 12, 3), (FRAMES, 4, 1)):
        spec = VideoSpec.from_dict(
            {"model": hunyuan_dir, "prompt": "x", "guidance_scale": 6.0, "frames": frames, "block_frames": block_frames,
             "context_frames": 0, "height": HEIGHT, "width": WIDTH, "steps": 3,
             "parallel": {"strategy": "auto", "degree": "auto"}}
        )
        choice = auto_choice(spec, spec.model, free, rule)
        plans = rank_video_plans(
            described, HEIGHT, WIDTH, 3, block_frames // 4, 3, free, ("frames", "patch"),
            max_stages=spec.max_stages(), batch=1, device=rule.device, link=rule.link,
        )
        best = pick_video_plan(plans)
        assert (choice["strategy"], choice["degree"]) == (best.strategy, best.degree), (block_frames, free)
        assert {p.strategy for p in plans} >= ({"none", "patch"} if free > 1 else {"none"})
        placed = spec.placed(spec.model, best.degree, choice)
        assert placed.parallel.strategy == best.strategy
        print(f"{frames} frames in blocks of {block_frames}, {free} free: {best.strategy} x{best.degree}")
