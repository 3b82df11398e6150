"""Wan 2.2 TI2V image-to-video (``WanImageToVideoPipeline`` with ``expand_timesteps``): the video's first latent frame
is held at the image's latent, its tokens at timestep 0. One block on one worker equals the pipeline called with the
image, from the same initial latents, with and without guidance; 2 stages equal one worker; the whole-video
strategies are refused at submit, naming the field."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import one_block_reference
from _tiny_wan22 import save_test_image, save_tiny_wan_ti2v_i2v
from _video_workers import check_two_stages_equal_one_worker, render_session

from cluster.errors import SpecError
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


def test_the_frame_pipeline_only(dirs):
    fields = dict(FIELDS, model=dirs["model"], image=dirs["image"], frames=8, block_frames=8, context_frames=0)
    assert VideoSpec.from_dict(dict(fields, parallel={"strategy": "none", "degree": 1})).image
    for strategy in ("sequence", "patch"):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(fields, parallel={"strategy": strategy, "degree": 2}))
        assert err.value.field == "parallel.strategy" and "TI2V image-to-video" in str(err.value)
