"""The cost model prices a video's VAE decode where each strategy runs it (``parallel.cost.video_decode``): the
FLOPs it counts on the meta device are the real VAE's, and the plans add one worker's, a shared or a balanced
decode as the strategies place it."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny_cogvideox import save_tiny_cogvideox
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan22 import save_tiny_wan_i2v
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from torch.utils.flop_counter import FlopCounterMode

from parallel.cost.video import rank_video_plans
from parallel.cost.video_decode import block_decode_s, decode_flops, pipeline_decode_s, vae_latent_channels
from pipelines.builtin import resolve_model
from pipelines.families import family_for_dir


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode-cost")
    return {
        "builtin": resolve_model("builtin-video"),
        "wan": save_tiny_wan_pipeline(root / "wan"),
        "wan-i2v": save_tiny_wan_i2v(root / "wan-i2v"),  # its transformer takes 36 channels, its VAE's latent 16
        "cogvideox": save_tiny_cogvideox(root / "cogvideox"),
        "ltx": save_tiny_ltx(root / "ltx"),
        "hunyuan": save_tiny_hunyuanvideo(root / "hunyuan"),
    }


@torch.no_grad()
@pytest.mark.parametrize("name", ["builtin", "wan", "wan-i2v", "cogvideox", "ltx", "hunyuan"])
def test_the_decode_counted_on_meta_is_the_vaes(dirs, name):
    family = family_for_dir(dirs[name])
    spec = family.cost_model(dirs[name], "float32")
    assert spec.vae_class == family.component_config(dirs[name], "vae")["_class_name"]
    assert spec.decode_by_frames == (name == "builtin")  # the built-in model's image VAE decodes frames apart
    vae = family.load(dirs[name], "float32", "cpu").vae
    height, width, frames = 64, 64, 2
    counted = decode_flops(spec, height, width, frames, "float32")
    assert counted is not None and counted[0] > 0
    channels = vae_latent_channels(spec)
    rows, cols = height // spec.vae_scale, width // spec.vae_scale
    latent = torch.randn((frames, channels, rows, cols) if spec.decode_by_frames else (1, channels, frames, rows, cols))
    extra = (torch.zeros(1),) if getattr(vae.config, "timestep_conditioning", False) else ()
    counter = FlopCounterMode(display=False)
    with counter:
        vae.decode(latent, *extra, return_dict=False)
    assert counted[0] == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_the_pipeline_shares_or_balances_the_decode():
    blocks, steps, block_s = 8, 10, 0.5
    assert pipeline_decode_s(1.0, block_s, blocks, steps, 1, False) == pytest.approx(blocks * block_s)
    for stages in (2, 3):  # frames that decode apart: every stage a share of every block
        assert pipeline_decode_s(1.0, block_s, blocks, steps, stages, True) == pytest.approx(blocks * block_s / stages)
    # a causal VAE on one stage: with the layers even every decode stalls the other stage (all of it); giving up
    # layers pays where most ticks decode (a long video), not over a short one's fill
    assert pipeline_decode_s(1.0, block_s, blocks, steps, 2, False) == pytest.approx(blocks * block_s)
    long = pipeline_decode_s(1.0, block_s, 64, steps, 2, False)
    assert 64 * block_s / 2 <= long < 0.7 * 64 * block_s
    # a decode longer than the stages' work can hide: close to all of it
    assert pipeline_decode_s(0.01, 5.0, blocks, steps, 2, False) > 0.9 * blocks * 5.0
    assert pipeline_decode_s(1.0, 0.0, blocks, steps, 2, False) == 0.0


@pytest.mark.parametrize("name", ["builtin", "wan"])
def test_each_strategy_places_the_decode(dirs, name):
    family = family_for_dir(dirs[name])
    spec = family.cost_model(dirs[name], "float32")
    factor = family.temporal_factor(dirs[name])
    height = width = 64
    latent_frames, block, steps = 32 // factor, 8 // factor, 3
    blocks = math.ceil(latent_frames / block)
    solo, corun = (block_decode_s(spec, height, width, block, "cpu-core", c) for c in (False, True))
    plans = rank_video_plans(spec, height, width, latent_frames, block, steps, 2, max_stages=4, batch=2)
    by = {(p.strategy, p.degree, p.cfg): p for p in plans}
    assert by[("none", 1, False)].decode_s == pytest.approx(blocks * solo)
    for key, plan in by.items():
        assert plan.decode_s > 0
        if key[0] in ("sequence", "patch") and key[1:] == (2, True) and spec.decode_by_frames:
            # a worker per branch, each decoding half of the one block's frames
            assert plan.decode_s == pytest.approx(blocks * corun * math.ceil(latent_frames / 2) / latent_frames)
        elif key[0] in ("sequence", "patch"):  # the one block, decoded on rank 0
            assert plan.decode_s == pytest.approx(blocks * solo)
    stages, branches = by[("frames", 2, False)].decode_s, by[("frames", 2, True)].decode_s
    if spec.decode_by_frames:
        assert stages == pytest.approx(blocks * corun / 2)
        assert branches == pytest.approx(blocks * corun * math.ceil(block / 2) / block)
    else:  # a causal VAE: the stages balance it, the branches wait for rank 0's
        assert blocks * corun / 2 <= stages <= blocks * corun
        assert branches == pytest.approx(blocks * corun)
    assert all(p.render_s > p.decode_s for p in plans)
    assert by[("none", 1, False)].as_dict()["predicted_decode_s"] == by[("none", 1, False)].decode_s


@pytest.mark.parametrize("name", ["ltx", "hunyuan"])
def test_a_blocks_decode_is_priced_with_the_frames_it_takes_again(dirs, name):
    """LTX-Video's window takes ``decode_context`` latent frames each way; HunyuanVideo's decoder decodes each
    temporal tile of ``tile + 1`` latent frames once, one every ``stride``. A whole-video plan decodes none again."""
    family = family_for_dir(dirs[name])
    spec = family.cost_model(dirs[name], "float32")
    if name == "ltx":
        assert spec.decode_extra_frames == 2 * family.decode_context
        assert family.cost_job_decode_extra_frames(dirs[name], 3) == 6  # a job's own window, both ways
    else:
        decoder = family.load(dirs[name], "float32", "cpu").block_decoder()
        assert spec.decode_extra_frames == decoder.tile + 1 - decoder.stride == 2
        # a job's own look-ahead only delays the frames: each tile is decoded once whatever it is
        assert family.cost_job_decode_extra_frames(dirs[name], 4) == family.cost_job_decode_extra_frames(dirs[name], 0) == 2
    height = width = 64
    latent_frames, block, steps = 24, 2, 2
    window = min(latent_frames, block + spec.decode_extra_frames)
    plans = rank_video_plans(spec, height, width, latent_frames, block, steps, 2, max_stages=4, batch=1)
    by = {(p.strategy, p.degree, p.cfg): p for p in plans}
    blocks = latent_frames // block
    assert by[("none", 1, False)].decode_s == pytest.approx(
        blocks * block_decode_s(spec, height, width, window, "cpu-core", False)
    )
    whole = [p for p in plans if p.strategy in ("sequence", "patch")]
    assert whole and all(
        p.decode_s == pytest.approx(blocks * block_decode_s(spec, height, width, block, "cpu-core", False))
        for p in whole
    )


def test_a_jobs_own_decode_context_prices_its_window(dirs):
    """``decode_context`` on an LTX-Video job (its window both ways) is what ``strategy=auto`` prices, not the
    family's default."""
    from cluster.jobs.video import VideoSpec
    from cluster.scheduler import CostModelDegreeRule, auto_choice

    rule = CostModelDegreeRule()
    spec = family_for_dir(dirs["ltx"]).cost_model(dirs["ltx"], "float32")
    fields = dict(prompt="x", model=str(dirs["ltx"]), frames=24, block_frames=8, height=64, width=96, steps=3,
                  context_frames=0, parallel={"strategy": "auto", "degree": "auto"})
    decode = {}
    for context in (None, 0, 1):
        job = VideoSpec.from_dict(dict(fields, **({} if context is None else {"decode_context": context})))
        plans = auto_choice(job, job.model, 2, rule)["considered"]
        decode[context] = next(p["predicted_decode_s"] for p in plans if p["strategy"] == "none")
    one = [block_decode_s(spec, 64, 96, frames, rule.device, False) for frames in (1, 3)]  # 3 latent frames, blocks of 1
    assert decode[0] == pytest.approx(3 * one[0])  # no context: each block alone
    assert decode[1] == decode[None] == pytest.approx(3 * one[1])  # the window reaches the whole (3-frame) video
