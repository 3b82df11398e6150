"""The LTX-Video family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the packed latent and the real prompt encoding,
both guidance branches batched), so ``parallel.strategy=auto`` picks among its frames and sequence plans by the
cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_ltx import save_tiny_ltx
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cluster.jobs.video import VideoSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice
from parallel.cost.profile import profile_model
from parallel.cost.video import pick_video_plan, rank_video_plans
from pipelines.families.ltx import LTX

HEIGHT, WIDTH, FRAMES = 64, 96, 24  # 3 latent frames of 2 x 3 latent pixels: 18 video tokens


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx"))


@torch.no_grad()
def test_the_description_costs_what_the_pipeline_runs(ltx_dir):
    pipe = LTX.load(ltx_dir, "float32", "cpu")
    text, negative, _ = pipe.conditioning("red stripes", "blurry", 3.0)
    both = {k: torch.cat([negative[k], text[k]]) for k in text}  # the branches batched, as the frame pipeline does
    channels, rows, cols = pipe.latent_shape(HEIGHT, WIDTH)
    latent_frames = pipe.latent_frames(FRAMES, "frames")
    adapter = LTX.sequence_adapter(pipe.transformer, (channels, latent_frames, rows, cols))
    latent = torch.zeros(2, channels, latent_frames, rows, cols)
    counter = FlopCounterMode(display=False)
    # the math attention, as on the meta device: torch's CPU flash kernel has no FLOP formula to count
    with sdpa_kernel(SDPBackend.MATH), counter:
        cond = adapter.conditions(torch.tensor([500.0]), both)
        adapter.forward(adapter.embed(latent, cond), cond)
    adapter.remove()
    described = LTX.cost_model(ltx_dir, "float32")
    assert described.kind == "video-packed" and described.batch == 2
    assert (described.text_len, described.text_dim) == tuple(text["prompt_embeds"].shape[1:])
    assert described.latent_shape(1, HEIGHT, WIDTH, FRAMES - 7) == (1, *latent.shape[1:])  # 8k+1 frames
    prof = profile_model(described, HEIGHT, WIDTH, FRAMES - 7, batch=2)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert prof.flops == counter.get_total_flops() and prof.param_bytes == 4 * params
    assert prof.tokens == latent_frames * rows * cols and prof.text_tokens == described.text_len


def test_auto_picks_the_cost_models_fastest_of_frames_and_sequence(ltx_dir):
    rule = CostModelDegreeRule()
    described = LTX.cost_model(ltx_dir, "float32")
    for block_frames, free in ((8, 2), (24, 2), (8, 1)):
        spec = VideoSpec.from_dict(
            {"model": ltx_dir, "prompt": "x", "guidance_scale": 1.0, "frames": FRAMES, "block_frames": block_frames,
             "context_frames": 0, "height": HEIGHT, "width": WIDTH, "steps": 3,
             "parallel": {"strategy": "auto", "degree": "auto"}}
        )
        choice = auto_choice(spec, spec.model, free, rule)
        plans = rank_video_plans(
            described, HEIGHT, WIDTH, 3, block_frames // 8, 3, free, ("frames", "sequence"),
            max_stages=spec.max_stages(), batch=1, device=rule.device, link=rule.link,
        )
        best = pick_video_plan(plans)
        assert (choice["strategy"], choice["degree"]) == (best.strategy, best.degree), (block_frames, free)
        assert {p.strategy for p in plans} >= ({"none", "sequence"} if free > 1 else {"none"})
        placed = spec.placed(spec.model, best.degree, choice)
        assert placed.parallel.strategy == best.strategy
        print(f"{FRAMES} frames in blocks of {block_frames}, {free} free: {best.strategy} x{best.degree}")
