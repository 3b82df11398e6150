"""Wan 2.2 TI2V image-to-video (``WanImageToVideoPipeline`` with ``expand_timesteps``): the video's first latent frame
is held at the image's latent, its tokens at timestep 0. One block on one worker equals the pipeline called with the
image, from the same initial latents, with and without guidance; 2 stages, a guidance branch per worker, and the
whole-video strategies (sequence, patch) on 2 workers equal one worker."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import one_block_reference
from _tiny_wan22 import save_test_image, save_tiny_wan_ti2v_i2v
from _video_workers import check_two_stages_equal_one_worker, render_session

from cluster.jobs.video import VideoSpec

SIZE = 64
"""4 x 4 latent pixels at 16 pixels per latent pixel, 2 x 2 tokens per latent frame."""
FIELDS = dict(prompt="red and yellow stripes", negative_prompt="blurry", height=SIZE, width=SIZE, steps=4, seed=11,
              dtype="float32")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wan-ti2v-i2v")
    return {"model": str(save_tiny_wan_ti2v_i2v(root / "ti2v-i2v")), "image": str(save_test_image(root / "first.png"))}


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@torch.no_grad()
def test_one_block_equals_the_pipeline(dirs, tmp_path, guidance):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    torch.set_num_threads(1)
    task = dict(FIELDS, image=dirs["image"], guidance_scale=guidance, frames=8, block_frames=8, context_frames=0)
    got = render_session(0, 1, dirs["model"], str(tmp_path), task)["latents"][0]
    reference, pipe, initial = one_block_reference(dirs["model"], 2, SIZE, 11)
    assert type(reference) is WanImageToVideoPipeline
    expected = reference(
        image=Image.open(dirs["image"]).convert("RGB"), prompt=FIELDS["prompt"], negative_prompt=FIELDS["negative_prompt"],
        height=SIZE, width=SIZE, num_frames=pipe.video_frames(2), num_inference_steps=4, guidance_scale=guidance,
        latents=initial, output_type="latent", return_dict=False,
    )[0]
    diff = (got - expected).abs().max().item()
    print(f"Wan TI2V image-to-video, g={guidance}, one block vs WanImageToVideoPipeline: max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    plain = render_session(0, 1, dirs["model"], str(tmp_path), dict(task, image=""))  # read as text-to-video
    assert not torch.allclose(plain["latents"][0][:, :, 1:], expected[:, :, 1:], atol=1e-3)  # the image matters


def test_two_stages_equal_one_worker(dirs, tmp_path):
    task = dict(FIELDS, image=dirs["image"], guidance_scale=3.0, frames=16, block_frames=8, context_frames=4)
    check_two_stages_equal_one_worker(dirs["model"], str(tmp_path), task, blocks=2)


def test_a_branch_per_worker_equals_one_worker(dirs, tmp_path):
    """CFG parallel: each worker runs one guidance branch of the frame pipeline (its adapter wrapped), and stage 0
    still ends block 0 with the image's latent."""
    from _band_checks import band_fields
    from _parallel_dist import run_ranks

    task = dict(FIELDS, image=dirs["image"], guidance_scale=3.0, frames=16, block_frames=8, context_frames=4)
    reference = render_session(0, 1, dirs["model"], str(tmp_path), task)
    got = run_ranks(render_session, 2, dirs["model"], str(tmp_path), band_fields(task, "frames", 2, cfg=True),
                    timeout=240)[0]
    for block, latent in reference["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)


def test_sequence_and_bands_on_two_workers_equal_one_worker(dirs, tmp_path):
    """The whole-video strategies: the model's own forward with the first latent frame held at the image's and a
    per-token timestep, split by diffusers' context parallelism (its ``_cp_plan`` splits the timestep with the tokens)
    or cut to row bands (each band's own tokens' timesteps); either equals one worker's one block, which equals the
    pipeline (above), and the video ends with the image's latent frame."""
    from _band_checks import band_fields
    from _parallel_dist import run_ranks
    from _video_workers import render_sessions

    task = dict(FIELDS, image=dirs["image"], guidance_scale=3.0, frames=8, block_frames=8, context_frames=0)
    for strategy in ("sequence", "patch"):  # accepted at submit
        spec = VideoSpec.from_dict(dict(task, model=dirs["model"], parallel={"strategy": strategy, "degree": 2}))
        assert spec.parallel.strategy == strategy
    reference = render_session(0, 1, dirs["model"], str(tmp_path), task)["latents"][0]
    renders = [(dirs["model"], str(tmp_path), band_fields(task, strategy, 2)) for strategy in ("sequence", "patch")]
    got = run_ranks(render_sessions, 2, renders, timeout=240)[0]
    for strategy, render in zip(("sequence", "patch"), got):
        diff = (render["latents"][0] - reference).abs().max().item()
        print(f"Wan TI2V image-to-video {strategy} (2 workers) vs 1 worker: max abs diff {diff:.2e}")
        torch.testing.assert_close(render["latents"][0], reference, atol=1e-4, rtol=1e-4)
        report = render["report"][strategy if strategy == "sequence" else "bands"]
        assert any(report["bytes_sent"].values())  # the forward really was split
    torch.testing.assert_close(got[0]["latents"][0][:, :, :1], reference[:, :, :1], atol=0, rtol=0)


def test_a_band_refuses_the_whole_videos_timestep():
    from pipelines.families.wan.patch import check_wan_input

    band = torch.zeros(1, 48, 2, 2, 4)  # 2 frames of 1 x 2 tokens
    check_wan_input((band, torch.zeros(1, 4)), {})
    with pytest.raises(ValueError, match="timestep: a per-token timestep on a band must be the band's 4 tokens, got 8"):
        check_wan_input((band, torch.zeros(1, 8)), {})
