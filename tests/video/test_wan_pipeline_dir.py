"""A full diffusers WanPipeline directory (tiny, built offline) as the model of a video render.

UMT5 text encoder, Wan transformer, causal 3-D Wan VAE (4 frames per latent frame, decoded block by
block with its cache carried over) and a multistep UniPC sampler, loaded from WanPipeline.save_pretrained's
layout; 2 frame blocks rendered on 2 pipeline stages (real gloo processes) equal the 1-worker render.
"""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_wan_pipeline import TEXT_TOKENS, Z_DIM, save_tiny_wan_pipeline
from _video_workers import render_session

from cluster.jobs.video import VideoSpec
from pipelines.families.wan.decode import WanBlockDecoder, denormalize
from pipelines.families.wan.loading import load_video_pipeline
from pipelines.video_writer import probe_mp4
from runtime import heap
from runtime.jobs.video_session import VideoSession

TASK = dict(
    dtype="float32",
    prompt="red and yellow stripes",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=32,
    width=32,
    frames=16,  # 4 latent frames: 2 blocks of 2
    block_frames=8,
    context_frames=1,
    steps=3,
    seed=0,
    fps=8.0,
)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan") / "tiny-wan")


def test_loads_as_a_video_model_with_diffusers_prompt_encoding(wan_dir):
    from diffusers import WanPipeline

    spec = VideoSpec.from_dict(
        dict(model=str(wan_dir), frames=16, block_frames=8, height=32, width=32, parallel={"degree": 2})
    )
    assert spec.model_path() == str(wan_dir)
    pipe = load_video_pipeline(wan_dir)
    assert (pipe.temporal_factor, pipe.vae_scale_factor, pipe.latent_shape(32, 48)) == (4, 8, (Z_DIM, 4, 6))
    assert pipe.video_frames(4) == 13
    reference = WanPipeline.from_pretrained(wan_dir, local_files_only=True, use_safetensors=True)
    expected, _ = reference.encode_prompt(
        prompt="red stripes", do_classifier_free_guidance=False, max_sequence_length=512  # __call__'s default
    )
    assert expected.shape[1] == 512 > TEXT_TOKENS  # the pipeline's length, not the tokenizer's own limit
    torch.testing.assert_close(pipe.encode_prompt("red stripes"), expected)


def test_block_frames_must_cover_whole_latent_frames(wan_dir, tmp_path):
    pipe = load_video_pipeline(wan_dir)
    task = VideoSpec(model=str(wan_dir), **dict(TASK, block_frames=6, frames=12))
    with pytest.raises(ValueError, match="block_frames: this model's VAE packs 4 frames"):
        VideoSession(pipe, task, None, video_path=str(tmp_path / "v.mp4"))
    assert list(tmp_path.iterdir()) == []


@torch.no_grad()
def test_streamed_blocks_equal_decoding_the_whole_video(wan_dir):
    torch.set_num_threads(1)
    vae = load_video_pipeline(wan_dir).vae
    latent = torch.randn(1, Z_DIM, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(denormalize(vae, latent), return_dict=False)[0]
    decoder = WanBlockDecoder(vae)
    streamed = torch.cat([decoder.decode(latent[:, :, :2]), decoder.decode(latent[:, :, 2:])], dim=2)
    assert whole.shape[2] == streamed.shape[2] == 1 + 4 * 4
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)
    # a fresh decoder per block (no cache carried over) gives other frames for the same latent frames
    cut = WanBlockDecoder(vae).decode(latent[:, :, 2:])
    assert cut.shape[2] == 1 + 4 * 2
    assert not torch.allclose(cut[:, :, -8:], whole[:, :, -8:], atol=1e-3)


def test_two_stages_equal_one_worker(wan_dir, tmp_path):
    torch.set_num_threads(1)
    ref = render_session(0, 1, str(wan_dir), str(tmp_path), TASK)
    got, stage1 = run_ranks(render_session, 2, str(wan_dir), str(tmp_path), TASK, timeout=240)
    assert sorted(got["latents"]) == sorted(ref["latents"]) == [0, 1]
    for block, latent in ref["latents"].items():
        assert latent.shape == (1, Z_DIM, 2, 4, 4)
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
    report = got["report"]
    assert (report["frames"], report["latent_frames"], report["frames_written"]) == (13, 4, 13)
    assert report["blocks_finished"] == [0, 1] and report["guidance_scale"] == 3.0
    assert report["layers"] == [0, report["boundaries"][1]] and stage1["report"]["layers"][1] == 4
    if heap.glibc_available():  # stage 0 trims once per block it wrote, stage 1 once per block it decoded
        decodes = 2 if report["decode_shares"][1] else 0
        print(f"wan 2 stages: decode shares {report['decode_shares']}, heap trims {report['heap_trims']}")
        assert (report["heap_trims"], stage1["report"]["heap_trims"]) == (2, decodes), report["decode_shares"]
    assert probe_mp4(tmp_path / "video-2.mp4") == {"frames": 13, "height": 32, "width": 32, "fps": 8.0}
