"""The HunyuanVideo family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the real prompt encoding, the prompt at the
pipeline's length; at most two branches, under true CFG), so ``parallel.strategy=auto`` picks among its frames, sequence (Tessera's own
Ulysses) and patch plans by the cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _video_cost import check_auto_picks_the_fastest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from parallel.cost.profile import profile_model
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
    assert described.kind == "video-mmdit" and described.batch == 2  # at most both branches (true CFG)
    assert (described.text_len, described.text_dim) == tuple(text["prompt_embeds"].shape[1:])
    assert described.extra["pooled_projections"] == text["pooled_prompt_embeds"].shape[1]
    assert described.latent_shape(1, HEIGHT, WIDTH, FRAMES - 3) == tuple(latent.shape)  # 4k+1 frames: 3 latent
    prof = profile_model(described, HEIGHT, WIDTH, FRAMES - 3, batch=1)  # one branch, as counted above
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert prof.flops == counter.get_total_flops() and prof.param_bytes == 4 * params
    assert prof.tokens == latent_frames * (rows // 2) * (cols // 2) and prof.text_tokens == described.text_len


def test_auto_picks_the_cost_models_fastest_of_frames_ulysses_and_bands(hunyuan_dir):
    fields = dict(prompt="x", guidance_scale=6.0, frames=FRAMES, height=HEIGHT, width=WIDTH, steps=3)
    whole = ("sequence", "patch")  # sequence: Tessera's own Ulysses, priced as diffusers' all-to-alls
    check_auto_picks_the_fastest(HUNYUANVIDEO, hunyuan_dir, fields, [(4, 2), (12, 3), (4, 1)], whole, batch=1)


def test_auto_prices_both_branches_under_true_cfg(hunyuan_dir):
    fields = dict(prompt="x", negative_prompt="blurry", true_cfg_scale=3.0, frames=FRAMES, height=HEIGHT, width=WIDTH,
                  steps=3)
    check_auto_picks_the_fastest(HUNYUANVIDEO, hunyuan_dir, fields, [(4, 2), (12, 2), (4, 1)], ("sequence", "patch"),
                                 batch=2)
