"""The CogVideoX family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the real prompt encoding, both guidance branches
batched, for the 1.0 and the 1.5 layouts), so ``parallel.strategy=auto`` picks among its frames and band plans by the
cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_cogvideox import save_tiny_cogvideox
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cluster.jobs.video import VideoSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice
from parallel.cost.profile import profile_model
from parallel.cost.video import pick_video_plan, rank_video_plans
from pipelines.families.cogvideox import COGVIDEOX

HEIGHT, WIDTH, FRAMES = 32, 32, 16  # 4 latent frames of 8 x 8


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cogvideox")
    return {v: str(save_tiny_cogvideox(root / f"tiny-{v}", version=v, layers=2)) for v in ("1.0", "1.5")}


@torch.no_grad()
@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_the_description_costs_what_the_pipeline_runs(dirs, version):
    path = dirs[version]
    pipe = COGVIDEOX.load(path, "float32", "cpu")
    text, negative, _ = pipe.conditioning("red stripes", "blurry", 5.0)
    channels, rows, cols = pipe.latent_shape(HEIGHT, WIDTH)
    latent_frames = pipe.latent_frames(FRAMES, "frames")
    adapter = COGVIDEOX.band_adapter(pipe.transformer, (channels, latent_frames, rows, cols))
    latent = torch.zeros(2, channels, latent_frames, rows, cols)
    counter = FlopCounterMode(display=False)
    # the math attention, as on the meta device: torch's CPU flash kernel has no FLOP formula to count
    with sdpa_kernel(SDPBackend.MATH), counter:
        cond = adapter.conditions(torch.tensor([500]), torch.cat([negative, text]))
        adapter.forward(adapter.embed(latent, cond), cond)
    described = COGVIDEOX.cost_model(path, "float32")
    assert described.kind == "video-mmdit-bfchw" and described.batch == 2
    assert (described.text_len, described.text_dim) == tuple(text.shape[1:])
    assert described.latent_shape(1, HEIGHT, WIDTH, FRAMES - 3) == (1, *latent.shape[1:])  # 4k+1 frames: 4 latent
    prof = profile_model(described, HEIGHT, WIDTH, FRAMES - 3, batch=2)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert prof.flops == counter.get_total_flops() and prof.param_bytes == 4 * params
    p_t = pipe.transformer.config.patch_size_t or 1
    assert prof.tokens == latent_frames // p_t * (rows // 2) * (cols // 2) and prof.text_tokens == described.text_len


def test_auto_picks_the_cost_models_fastest_of_frames_and_bands(dirs):
    rule = CostModelDegreeRule()
    described = COGVIDEOX.cost_model(dirs["1.0"], "float32")
    for block_frames, free in ((8, 2), (16, 3), (8, 1)):
        spec = VideoSpec.from_dict(
            {"model": dirs["1.0"], "prompt": "x", "negative_prompt": "y", "guidance_scale": 5.0, "frames": FRAMES,
             "block_frames": block_frames, "context_frames": 0, "height": HEIGHT, "width": WIDTH, "steps": 3,
             "parallel": {"strategy": "auto", "degree": "auto"}}
        )
        choice = auto_choice(spec, spec.model, free, rule)
        plans = rank_video_plans(
            described, HEIGHT, WIDTH, 4, block_frames // 4, 3, free, ("frames", "patch"),
            max_stages=spec.max_stages(), batch=2, device=rule.device, link=rule.link,
        )
        best = pick_video_plan(plans)
        assert (choice["strategy"], choice["degree"]) == (best.strategy, best.degree), (block_frames, free)
        assert {p.strategy for p in plans} >= ({"none", "patch"} if free > 1 else {"none"})
        placed = spec.placed(spec.model, best.degree, choice)
        assert placed.parallel.strategy == best.strategy
        print(f"{FRAMES} frames in blocks of {block_frames}, {free} free: {best.strategy} x{best.degree}")
