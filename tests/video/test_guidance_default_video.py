"""A video job that leaves ``guidance_scale`` unset renders what the diffusers pipeline called with its own defaults
renders: a WanPipeline directory's job is guided at WanPipeline's 5.0 (both branches), from the same initial latents,
one block on one worker; validation stores that weight with the job, and CFG parallel takes it."""

from __future__ import annotations

import pytest
import torch
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template
from pipelines.families.wan.loading import load_video_pipeline

PROMPT, SIZE = "red and yellow stripes", 32
TASK = dict(prompt=PROMPT, height=SIZE, width=SIZE, frames=8, block_frames=8, context_frames=0, steps=3, seed=5)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan-guidance") / "tiny-wan")


def test_validation_stores_the_pipelines_weight(wan_dir):
    spec = VideoSpec.from_dict(dict(TASK, model=str(wan_dir), parallel={"strategy": "frames", "degree": 2, "cfg": True}))
    assert spec.guidance_scale == 5.0 and spec.stored()["guidance_scale"] == 5.0
    assert spec.placed(spec.model, 2).guidance_scale == 5.0
    one = {"strategy": "none", "degree": 1}
    assert VideoSpec.from_dict(dict(TASK, model=str(wan_dir), guidance_scale=1.0, parallel=one)).guidance_scale == 1.0


@torch.no_grad()
def test_an_unset_weight_renders_as_the_pipeline_called_with_its_defaults(wan_dir, tmp_path):
    from diffusers import WanPipeline

    torch.set_num_threads(1)
    got = render_session(0, 1, str(wan_dir), str(tmp_path), TASK)
    assert got["report"]["guidance_scale"] == 5.0
    pipe = load_video_pipeline(wan_dir)
    channels, height, width = pipe.latent_shape(SIZE, SIZE)
    initial = block_noise(noise_template(5, (channels, 2, height, width)), 5, 0)
    reference = WanPipeline.from_pretrained(wan_dir, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    expected = reference(  # its defaults: guidance_scale 5.0, no negative prompt ("")
        prompt=PROMPT, height=SIZE, width=SIZE, num_frames=pipe.video_frames(2), num_inference_steps=3,
        latents=initial, output_type="latent", return_dict=False,
    )[0]
    (tmp_path / "g1").mkdir()
    unguided = render_session(0, 1, str(wan_dir), str(tmp_path / "g1"), dict(TASK, guidance_scale=1.0))
    diff = (got["latents"][0] - expected).abs().max().item()
    print(f"Wan, guidance unset vs WanPipeline's defaults: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(unguided["latents"][0], expected, atol=1e-3)  # the weight matters here
