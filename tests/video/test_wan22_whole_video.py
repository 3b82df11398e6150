"""Wan 2.2's two experts and image-to-video as one block over 2 workers (real gloo processes):
``parallel.strategy=sequence`` (diffusers' context parallelism, Ulysses, on each expert) and ``patch`` (row bands
of every frame, sync, each expert under its own band plan, an image's conditioning channels cut with the latent)
each equal one worker rendering the whole video (whose one block equals diffusers' pipelines called directly:
``test_wan22.py``), for the two-expert T2V A14B layout, Wan 2.2 I2V A14B (two experts, image latent channels)
and Wan 2.1 I2V (CLIP image tokens); displaced bands on two experts run and stay close."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_wan22 import save_test_image, save_tiny_wan_i2v, save_tiny_wan_two_experts
from _video_workers import render_session, render_sessions

from cluster.jobs.video import VideoParallelSpec

pytestmark = pytest.mark.slow

RENDER = dict(  # 2 latent frames x 2 x 2 patches: 8 video tokens; 4 steps cross the experts' boundary
    prompt="red and yellow stripes", negative_prompt="blurry", guidance_scale=3.0, height=32, width=32,
    frames=8, block_frames=8, context_frames=0, steps=4, seed=6,
)


def _fields(strategy: str, degree: int, image: str | None, **parallel) -> dict:
    extra = {"image": image} if image else {}
    return dict(RENDER, dtype="float32", parallel=VideoParallelSpec(strategy, degree, **parallel), **extra)


def test_sequence_and_bands_on_two_workers_equal_one(tmp_path):
    torch.set_num_threads(1)
    image = str(save_test_image(tmp_path / "first.png"))
    models = {
        "a14b": (str(save_tiny_wan_two_experts(tmp_path / "a14b")), None),
        "i2v22": (str(save_tiny_wan_i2v(tmp_path / "i2v22", two_experts=True)), image),
        "i2v21": (str(save_tiny_wan_i2v(tmp_path / "i2v21")), image),
    }
    refs = {
        name: render_session(0, 1, model, str(tmp_path), _fields("none", 1, img))
        for name, (model, img) in models.items()
    }
    renders = [
        (model, str(tmp_path), _fields(strategy, 2, img))
        for strategy in ("sequence", "patch")
        for model, img in models.values()
    ]
    a14b = models["a14b"][0]
    renders.append((a14b, str(tmp_path), _fields("patch", 2, None, mode="displaced", warmup_steps=1)))
    got, other = run_ranks(render_sessions, 2, renders, timeout=300)
    for k, (strategy, name) in enumerate((s, n) for s in ("sequence", "patch") for n in models):
        ref = refs[name]["latents"][0]
        diff = (got[k]["latents"][0] - ref).abs().max().item()
        print(f"Wan {name} {strategy} (2 workers) vs 1 worker: max abs diff {diff:.2e}")
        torch.testing.assert_close(got[k]["latents"][0], ref, atol=1e-4, rtol=1e-4)
        assert not other[k]["latents"] and got[k]["report"]["blocks"] == 1
        report = got[k]["report"][strategy if strategy == "sequence" else "bands"]
        assert report["models"] == (1 if name == "i2v21" else 2)  # each expert under the plan
        if strategy == "sequence":  # the forward really was split: Ulysses' all-to-all, the bands' K/V
            assert report["ulysses"] == 2 and report["bytes_sent"]["all_to_all"]
        else:
            assert report["mode"] == "sync" and len(report["bands"]) == 2 and any(report["bytes_sent"].values())
    stale, ref = got[-1]["latents"][0], refs["a14b"]["latents"][0]
    diff = (stale - ref).abs().max().item()
    print(f"Wan a14b patch displaced (warmup 1 of 4 steps per expert) vs 1 worker: max abs diff {diff:.2e}")
    assert got[-1]["report"]["bands"]["mode"] == "displaced" and 0 < diff < 0.5 * ref.abs().max().item()
