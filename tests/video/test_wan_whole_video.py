"""Wan video jobs rendered as one block over 2 workers (real gloo processes): ``parallel.strategy=sequence``
(diffusers' context parallelism over ``WanTransformer3DModel._cp_plan``, Ulysses, and Ring: Wan's forward takes no
mask) and ``parallel.strategy=patch``
(row bands of every frame under the family's patch plan, sync) each equal one worker rendering the whole video
as one block, for a diffusers ``WanPipeline`` directory (and sequence for the built-in Wan-layout model);
displaced bands run and stay close; what does not split is refused at submit."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session, render_sessions
from _whole_video_workers import resumed_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from pipelines.builtin import resolve_model

WAN = dict(  # 2 latent frames x 2 x 2 patches: 8 video tokens; 2 heads; 4 latent rows = 2 bands of a patch row
    prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0, height=32, width=32,
    frames=8, block_frames=8, context_frames=0, steps=2, seed=4,
)
BUILTIN = dict(  # 4 latent frames x 2 x 2 patches: 16 tokens; 4 heads
    prompt="blue and yellow stripes", guidance_scale=1.0, height=32, width=32,
    frames=4, block_frames=4, context_frames=0, steps=2, seed=2,
)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan") / "tiny-wan", layers=2))


def _fields(base: dict, strategy: str, degree: int, **parallel) -> dict:
    return dict(base, dtype="float32", parallel=VideoParallelSpec(strategy, degree, **parallel))


def test_two_workers_equal_one(wan_dir, tmp_path):
    torch.set_num_threads(1)
    builtin = str(resolve_model("builtin-video"))
    models = ((wan_dir, WAN), (builtin, BUILTIN))
    refs = [render_session(0, 1, model, str(tmp_path), _fields(base, "none", 1))["latents"][0] for model, base in models]
    renders = []
    for i, (model, base) in enumerate(models):
        out = tmp_path / f"m{i}"
        out.mkdir()
        renders.append((model, str(out), _fields(base, "sequence", 2)))
    renders.insert(1, (wan_dir, str(tmp_path / "m0"), _fields(WAN, "patch", 2)))
    displaced = tmp_path / "displaced"
    displaced.mkdir()
    renders.append((wan_dir, str(displaced), _fields(WAN, "patch", 2, mode="displaced", warmup_steps=1)))
    renders.append((wan_dir, str(displaced), _fields(WAN, "sequence", 2, ring=2)))  # Ring 2 x Ulysses 1
    got, other = run_ranks(render_sessions, 2, renders, timeout=240)
    names = ["wan sequence", "wan patch", "builtin sequence"]
    for k, name in enumerate(names):
        ref = refs[(0, 0, 1)[k]]  # the Wan directory, twice, then the built-in model
        diff = (got[k]["latents"][0] - ref).abs().max().item()
        print(f"{name} (2 workers) vs 1 worker: max abs diff {diff:.2e}")
        torch.testing.assert_close(got[k]["latents"][0], ref, atol=1e-4, rtol=1e-4)
        assert not other[k]["latents"] and got[k]["report"]["blocks"] == 1
    for k in (0, 2):  # the forward really was split (Ulysses' all-to-all)
        assert got[k]["report"]["sequence"]["ulysses"] == 2 and got[k]["report"]["sequence"]["bytes_sent"]["all_to_all"]
    bands = got[1]["report"]["bands"]
    assert bands["mode"] == "sync" and len(bands["bands"]) == 2 and any(bands["bytes_sent"].values())
    ring = got[4]["latents"][0]
    diff = (ring - refs[0]).abs().max().item()
    print(f"wan sequence Ring 2 (2 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(ring, refs[0], atol=1e-4, rtol=1e-4)
    assert got[4]["report"]["sequence"]["ring"] == 2 and got[4]["report"]["sequence"]["ulysses"] == 1
    stale = got[3]["latents"][0]
    diff = (stale - refs[0]).abs().max().item()
    print(f"wan patch displaced (warmup 1 of 2 steps) vs 1 worker: max abs diff {diff:.2e}")
    assert got[3]["report"]["bands"]["mode"] == "displaced" and 0 < diff < 0.5 * refs[0].abs().max().item()


def test_sync_bands_resume_from_a_checkpoint(wan_dir, tmp_path):
    """Stopped after one of 2 steps and continued in fresh sessions (bands rebuilt, their geometry learned again),
    2 workers' sync bands still equal one worker's uninterrupted render."""
    torch.set_num_threads(1)
    ref = render_session(0, 1, wan_dir, str(tmp_path), _fields(WAN, "none", 1))["latents"][0]
    got, other = run_ranks(resumed_session, 2, wan_dir, str(tmp_path), _fields(WAN, "patch", 2), 1, timeout=180)
    diff = (got["latents"][0] - ref).abs().max().item()
    print(f"wan patch resumed at tick 1 (2 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], ref, atol=1e-4, rtol=1e-4)
    assert got["report"]["bands"]["mode"] == "sync" and not other["latents"]


def test_refused_at_submit(wan_dir):
    base = dict(WAN, model=wan_dir)
    spec = VideoSpec.from_dict({**base, "block_frames": 4, "context_frames": 4, "parallel": {"strategy": "patch", "degree": 2}})
    assert (spec.block_frames, spec.context_frames, spec.blocks) == (8, 0, 1) and spec.notes
    for parallel, field in (
        ({"strategy": "sequence", "degree": 3}, "parallel.degree"),  # 2 heads
        ({"strategy": "patch", "degree": 3}, "parallel.degree"),  # 4 latent rows: 2 bands of a patch row at most
        ({"strategy": "patch", "degree": 2, "mode": "stale"}, "parallel.mode"),
        ({"strategy": "patch", "degree": "auto"}, "parallel.degree"),
        ({"strategy": "patch", "degree": 2, "ring": 2}, "parallel.ring"),
        ({"strategy": "sequence", "degree": 2, "ring": 3}, "parallel.ring"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, "parallel": parallel})
        assert err.value.field == field, parallel
    with pytest.raises(SpecError, match="video tokens"):  # 1 latent frame x 1 x 3 patches: 3 tokens
        VideoSpec.from_dict({**base, "frames": 4, "block_frames": 4, "height": 16, "width": 48,
                             "parallel": {"strategy": "sequence", "degree": 2}})
