"""The LTX-Video family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the packed latent and the real prompt encoding,
both guidance branches batched), so ``parallel.strategy=auto`` picks among its frames, sequence and band plans by
the cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_ltx import save_tiny_ltx
from _video_cost import check_auto_picks_the_fastest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from parallel.cost.profile import profile_model
from parallel.cost.traffic import frame_block_tokens
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
    # 8 video frames per latent frame: a frame block's tokens (the frame pipeline's traffic) by LTX's count, not Wan's 4
    assert prof.latent_frames == latent_frames and frame_block_tokens(prof, 1) == rows * cols


def test_auto_picks_the_cost_models_fastest_of_frames_sequence_and_bands(ltx_dir):
    fields = dict(prompt="x", guidance_scale=1.0, frames=FRAMES, height=HEIGHT, width=WIDTH, steps=3)
    check_auto_picks_the_fastest(LTX, ltx_dir, fields, [(8, 2), (24, 2), (8, 1)], ("sequence", "patch"), batch=1)


def test_auto_prices_the_jobs_prompt_length(ltx_dir):
    """strategy=auto's prediction for a job of max_sequence_length=16 is the cost model's for a 16-token prompt."""
    from dataclasses import replace

    from cluster.jobs.video import VideoSpec
    from cluster.scheduler import CostModelDegreeRule, auto_choice
    from parallel.cost.video import pick_video_plan, rank_video_plans

    rule = CostModelDegreeRule()
    fields = dict(model=str(ltx_dir), prompt="x", negative_prompt="y", guidance_scale=3.0, frames=FRAMES,
                  block_frames=8, context_frames=0, height=HEIGHT, width=WIDTH, steps=2,
                  parallel={"strategy": "auto", "degree": "auto"})
    described = LTX.cost_model(str(ltx_dir), "float32")
    assert described.text_len == 128  # LTXPipeline's default

    def best(text_len: int, spec) -> dict:
        plans = rank_video_plans(replace(described, text_len=text_len), HEIGHT, WIDTH, FRAMES // 8, 1, 2, 2,
                                 ("frames", "sequence", "patch"), max_stages=spec.max_stages(), batch=2,
                                 device=rule.device, link=rule.link)
        return pick_video_plan(plans).as_dict()

    short = VideoSpec.from_dict({**fields, "max_sequence_length": 16})
    default = VideoSpec.from_dict(fields)
    assert auto_choice(short, short.model, 2, rule)["predicted"] == best(16, short) != best(128, short)
    assert auto_choice(default, default.model, 2, rule)["predicted"] == best(128, default)
