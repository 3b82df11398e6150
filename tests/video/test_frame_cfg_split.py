"""The frame pipeline under CFG parallel (``parallel.strategy=frames, degree=2, cfg=true``; real gloo processes):
each worker renders the video block-wise on one guidance branch and swaps every model output with its partner,
equal to one worker batching both branches through the same block queue (feature cache and context frames
included); a checkpoint taken on the split resumes on one worker and one taken on one worker on the split."""

from __future__ import annotations

import pytest
import torch
from _cfg_split_workers import checkpointed_render, resumed_render
from _parallel_dist import run_ranks
from _tiny_wan_pipeline import save_tiny_wan_pipeline

from cluster.jobs.video import VideoParallelSpec

pytestmark = pytest.mark.slow

WAN = dict(  # 4 blocks of 2 latent frames (8 frames each), a latent frame of context: the cache matters
    prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0, height=32, width=32,
    frames=32, block_frames=8, context_frames=4, steps=3, seed=4, dtype="float32",
)
TICK = 3  # mid-render: block 0 finished, blocks 1-3 in the queue


def _fields(degree: int, cfg: bool) -> dict:
    return dict(WAN, parallel=VideoParallelSpec("frames" if degree > 1 else "none", degree, cfg=cfg))


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return str(save_tiny_wan_pipeline(tmp_path_factory.mktemp("cfg-split") / "wan", layers=2))


def _assert_blocks_equal(got: dict, expected: dict, what: str) -> None:
    assert got and set(got) <= set(expected), what
    for block, latent in got.items():
        diff = (latent - expected[block]).abs().max().item()
        print(f"{what}, block {block}: max abs diff {diff:.2e}")
        torch.testing.assert_close(latent, expected[block], atol=1e-4, rtol=1e-4)


def _split_equals_one_worker(name: str, model, fields: dict, tmp_path, degree: int = 2) -> list[dict]:
    """A 2-block render with a guidance branch per half of ``degree`` workers against one worker batching both
    branches; every rank's result."""
    one = checkpointed_render(0, 1, str(model), str(tmp_path), dict(fields, parallel=VideoParallelSpec("none", 1)), 1)
    split = run_ranks(checkpointed_render, degree, str(model), str(tmp_path),
                      dict(fields, parallel=VideoParallelSpec("frames", degree, cfg=True)), 1, timeout=300)
    assert len(one["latents"]) == len(split[0]["latents"]) == 2, name
    _assert_blocks_equal(split[0]["latents"], one["latents"], f"{name}: CFG split on {degree} workers vs 1 worker")
    return split


def other_families(tmp_path) -> dict:
    """CogVideoX and LTX-Video's tiny pipelines (2 layers) with a guided render of 2 blocks each: name -> (model
    directory, fields)."""
    from _tiny_cogvideox import save_tiny_cogvideox
    from _tiny_ltx import save_tiny_ltx

    return {
        "cogvideox": (save_tiny_cogvideox(tmp_path / "cogvideox", layers=2),
                      dict(WAN, frames=32, block_frames=16, context_frames=4, guidance_scale=5.0)),
        "ltx": (save_tiny_ltx(tmp_path / "ltx", layers=2),
                dict(WAN, height=64, width=64, frames=48, block_frames=24, context_frames=8)),
    }


def test_branch_per_worker_equals_one_worker_and_checkpoints_cross_layouts(wan_dir, tmp_path):
    torch.set_num_threads(1)
    one = checkpointed_render(0, 1, wan_dir, str(tmp_path), _fields(1, False), TICK)
    split = run_ranks(checkpointed_render, 2, wan_dir, str(tmp_path), _fields(2, True), TICK, timeout=300)
    assert len(one["latents"]) == 4
    _assert_blocks_equal(split[0]["latents"], one["latents"], "CFG split on 2 workers vs 1 worker")
    assert len(split[0]["latents"]) == 4 and not split[1]["latents"]  # rank 0 writes the video
    assert split[0]["report"]["frames_written"] == one["report"]["frames_written"] > 0
    assert [r["report"]["cfg"]["branch"] for r in split] == ["cond", "uncond"]
    assert all(sum(r["report"]["cfg"]["bytes_sent"]["cfg"].values()) for r in split)  # partners swapped outputs
    # each worker ran every work item (on its branch alone)
    assert all(r["report"]["items"] == one["report"]["items"] for r in split)

    state = split[0]["state"]
    assert state["tick"] == TICK and state["cache"]
    assert all(entry["key"].shape[0] == 2 for entry in state["cache"])  # both branches, as one worker batches them
    assert [(e["layer"], e["block"], e["edge"]) for e in state["cache"]] == [
        (e["layer"], e["block"], e["edge"]) for e in one["state"]["cache"]
    ]
    for a, b in zip(state["cache"], one["state"]["cache"]):
        torch.testing.assert_close((a["key"], a["value"]), (b["key"], b["value"]), atol=1e-4, rtol=1e-4)

    on_one = resumed_render(0, 1, wan_dir, str(tmp_path), _fields(1, False), state)
    _assert_blocks_equal(on_one["latents"], one["latents"], "split's checkpoint resumed on 1 worker")
    on_split = run_ranks(resumed_render, 2, wan_dir, str(tmp_path), _fields(2, True), one["state"], timeout=300)
    _assert_blocks_equal(on_split[0]["latents"], one["latents"], "1 worker's checkpoint resumed on the split")
    assert len(on_split[0]["latents"]) == len(on_one["latents"]) == 4 - state["blocks_finished"]


def test_branch_per_worker_for_cogvideox_and_ltx(tmp_path):
    """The other families with a negative branch, through their own frame adapters (joint text attention for
    CogVideoX, LTX-Video's masked prompt): 2 blocks each, a branch per worker equal to one worker."""
    torch.set_num_threads(1)
    for name, (model, fields) in other_families(tmp_path).items():
        _split_equals_one_worker(name, model, fields, tmp_path)


def wan_variants(tmp_path) -> dict:
    """Wan's image-to-video (2.1 with CLIP image embeddings, 2.2 A14B with two experts) and Wan 2.2 A14B text-to-video
    with a guided render of 2 blocks each: name -> (model directory, fields)."""
    from _tiny_wan22 import save_test_image, save_tiny_wan_i2v, save_tiny_wan_two_experts

    image = str(save_test_image(tmp_path / "image.png"))
    base = dict(WAN, frames=16, steps=4)
    return {
        "wan 2.1 i2v": (save_tiny_wan_i2v(tmp_path / "i2v21"), dict(base, image=image)),
        "wan 2.2 i2v a14b": (save_tiny_wan_i2v(tmp_path / "i2v22", two_experts=True), dict(base, image=image)),
        "wan 2.2 a14b": (save_tiny_wan_two_experts(tmp_path / "a14b"), base),
    }


def test_branch_per_worker_for_image_to_video_and_two_experts(tmp_path):
    """2 blocks each of ``wan_variants``: the image's conditioning and the expert switch per step follow each
    branch."""
    torch.set_num_threads(1)
    for name, (model, fields) in wan_variants(tmp_path).items():
        _split_equals_one_worker(name, model, fields, tmp_path)
