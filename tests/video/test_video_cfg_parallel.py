"""CFG parallel for the whole-video strategies (``parallel.cfg=true`` with sequence or patch; real gloo processes):
the conditional branch on half the workers, the unconditional one on the other half, partners swapping outputs
(``pipelines.whole_video.BranchSplit``), equal to one worker batching both branches. On 2 workers each branch's
forward is whole on its worker (Wan, CogVideoX through its own band-split forward, LTX); on 4 each branch splits
it over 2 (Wan: Ulysses, bands). What cannot split so is refused naming the field."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_cogvideox import save_tiny_cogvideox
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec

pytestmark = pytest.mark.slow

WAN = dict(  # 2 latent frames x 2 x 2 patches: 8 video tokens; 2 heads; 4 latent rows = 2 bands of a patch row
    prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0, height=32, width=32,
    frames=8, block_frames=8, context_frames=0, steps=2, seed=4,
)
COG = dict(WAN, frames=16, block_frames=16, guidance_scale=5.0)  # 4 latent frames of 8 x 8 latent pixels
LTX = dict(WAN, height=64, width=64, frames=24, block_frames=24, steps=3)  # 3 latent frames x 2 x 2


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cfg")
    return {
        "wan": str(save_tiny_wan_pipeline(root / "wan", layers=2)),
        "cogvideox": str(save_tiny_cogvideox(root / "cogvideox", layers=2)),
        "ltx": str(save_tiny_ltx(root / "ltx", layers=2)),
    }


def _fields(base: dict, strategy: str, degree: int, cfg: bool = False) -> dict:
    return dict(base, dtype="float32", parallel=VideoParallelSpec(strategy, degree, cfg=cfg))


def test_branches_on_their_own_workers_equal_one_worker(dirs, tmp_path):
    torch.set_num_threads(1)
    cases = {  # name: (model, render fields, workers, strategy)
        "wan sequence": (dirs["wan"], WAN, 2, "sequence"),
        "wan patch": (dirs["wan"], WAN, 2, "patch"),
        "cogvideox patch": (dirs["cogvideox"], COG, 2, "patch"),
        "ltx sequence": (dirs["ltx"], LTX, 2, "sequence"),
        "wan sequence, Ulysses 2 per branch": (dirs["wan"], WAN, 4, "sequence"),
        "wan patch, 2 bands per branch": (dirs["wan"], WAN, 4, "patch"),
    }
    refs = {
        model: render_session(0, 1, model, str(tmp_path), _fields(base, "none", 1))["latents"][0]
        for model, base, _, _ in cases.values()
    }
    for workers in (2, 4):
        names = [name for name, case in cases.items() if case[2] == workers]
        renders = [(cases[n][0], str(tmp_path), _fields(cases[n][1], cases[n][3], workers, cfg=True)) for n in names]
        ranks = run_ranks(render_sessions, workers, renders, timeout=300)
        for k, name in enumerate(names):
            ref = refs[cases[name][0]]
            got = ranks[0][k]
            diff = (got["latents"][0] - ref).abs().max().item()
            print(f"{name}, CFG parallel on {workers} workers vs 1 worker: max abs diff {diff:.2e}")
            torch.testing.assert_close(got["latents"][0], ref, atol=1e-4, rtol=1e-4)
            assert all(not r[k]["latents"] for r in ranks[1:])  # rank 0 writes the video
            branches = [r[k]["report"]["cfg"]["branch"] for r in ranks]
            assert branches == ["cond"] * (workers // 2) + ["uncond"] * (workers // 2)
            assert all(sum(r[k]["report"]["cfg"]["bytes_sent"]["cfg"].values()) for r in ranks)  # partners swapped
            split = got["report"].get("sequence") or got["report"].get("bands")
            assert (split is not None) == (workers == 4)  # a branch of 2 workers splits its forward


def test_refusals_name_the_field(dirs, tmp_path):
    hunyuan = str(save_tiny_hunyuanvideo(tmp_path / "hunyuanvideo"))
    cases = [
        (dict(WAN, model=dirs["wan"], parallel={"strategy": "none", "degree": 1, "cfg": True}),
         "parallel.cfg", "splits the workers of the frame pipeline or"),
        (dict(WAN, model=dirs["wan"], guidance_scale=1.0, parallel={"strategy": "sequence", "degree": 2, "cfg": True}),
         "parallel.cfg", "no unconditional branch"),
        (dict(WAN, model=dirs["wan"], parallel={"strategy": "patch", "degree": 3, "cfg": True}),
         "parallel.degree", "even degree"),
        (dict(WAN, model=dirs["wan"], parallel={"strategy": "sequence", "degree": 6, "cfg": True}),
         "parallel.degree", "heads"),  # 3 workers per branch: Ulysses cannot share 2 heads out
        (dict(WAN, model=hunyuan, negative_prompt="", parallel={"strategy": "sequence", "degree": 2, "cfg": True}),
         "parallel.cfg", "true_cfg_scale=1.0 runs no unconditional branch"),  # its guidance_scale is embedded
        (dict(WAN, model=hunyuan, negative_prompt="", true_cfg_scale=3.0,
              parallel={"strategy": "sequence", "degree": 2, "cfg": True}),
         "parallel.cfg", "true CFG only with a negative_prompt"),
    ]
    for fields, field, words in cases:
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(fields)
        assert err.value.field == field and words in str(err.value), (field, str(err.value))
