"""A tiny HunyuanVideoPipeline directory (built offline) rendered through the frame pipeline: one block on one worker
equals diffusers' own ``HunyuanVideoPipeline.__call__``; S = 2 and 3 stages over real gloo processes equal the
1-worker block-wise render (the block-by-block VAE decode: ``test_hunyuan_decode_lookahead``)."""

from __future__ import annotations

import pytest
import torch
from _hunyuan_workers import PROMPT, frame_render
from _parallel_dist import run_ranks
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo

from parallel.frames.noise import block_noise, noise_template
from pipelines.families import family_for_dir
from pipelines.families.hunyuanvideo import HUNYUANVIDEO

MULTI = dict(frames=6, block_frames=2, context_frames=1, steps=3, seed=4)
"""3 blocks of 2 latent frames (8 video frames each), one context frame: the S-stage scenario."""


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny-hunyuanvideo"))


@pytest.fixture(scope="module")
def reference(hunyuan_dir):
    """The 1-worker block-wise render of MULTI."""
    return frame_render(0, 1, hunyuan_dir, MULTI, 6.0)


@torch.no_grad()
def test_prompt_is_the_pipelines_own(hunyuan_dir):
    from diffusers import HunyuanVideoPipeline

    assert family_for_dir(hunyuan_dir) is HUNYUANVIDEO
    parts = HUNYUANVIDEO.load(hunyuan_dir, "float32", "cpu")
    text, negative, cfg = parts.conditioning("red stripes", "", 4.5)
    assert negative is None and cfg == 1.0
    pipe = HunyuanVideoPipeline.from_pretrained(hunyuan_dir, local_files_only=True)
    embeds, pooled, mask = pipe.encode_prompt(prompt="red stripes", max_sequence_length=256)  # __call__'s default
    assert text["prompt_embeds"].shape == (1, 256, embeds.shape[2]) and int(mask.sum()) == 3  # over the tokenizer's
    # own limit (TEXT_TOKENS after the template's crop): the pipeline's length, not the tokenizer's
    torch.testing.assert_close(text["prompt_embeds"], embeds)
    torch.testing.assert_close(text["pooled_prompt_embeds"], pooled)
    assert torch.equal(text["prompt_attention_mask"], mask)
    assert text["guidance"].tolist() == [4500.0]
    assert (parts.temporal_factor, parts.latent_shape(32, 48), parts.video_frames(3)) == (4, (LATENT_CHANNELS, 4, 6), 9)


@torch.no_grad()
def test_one_block_equals_the_diffusers_pipeline(hunyuan_dir):
    """The whole video as one block on one worker, from the same initial latents, equals
    ``HunyuanVideoPipeline(...)(latents=..., output_type="latent")``."""
    from diffusers import HunyuanVideoPipeline

    config = dict(frames=3, block_frames=3, context_frames=1, steps=3, seed=2)
    got = frame_render(0, 1, hunyuan_dir, config, 6.0)["latents"][0]
    block_shape = (LATENT_CHANNELS, 3, 4, 4)
    latents = block_noise(noise_template(config["seed"], block_shape), config["seed"], 0)
    pipe = HunyuanVideoPipeline.from_pretrained(hunyuan_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=PROMPT,
        height=32,
        width=32,
        num_frames=9,  # 3 latent frames
        num_inference_steps=3,
        guidance_scale=6.0,
        latents=latents.clone(),
        output_type="latent",
    ).frames
    assert got.shape == expected.shape == (1, *block_shape)
    print(f"one block vs HunyuanVideoPipeline: max abs diff {(got - expected).abs().max().item():.3g}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("world", [2, 3])
def test_stages_equal_one_worker(hunyuan_dir, reference, world):
    ranks = run_ranks(frame_render, world, hunyuan_dir, MULTI, 6.0, timeout=240)
    got = ranks[0]
    assert sorted(got["latents"]) == sorted(reference["latents"]) == [0, 1, 2]
    diff = max((got["latents"][b] - reference["latents"][b]).abs().max().item() for b in reference["latents"])
    print(f"{world} stages vs 1 worker: max abs diff {diff:.3g}")
    for block, latent in reference["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
    assert got["applied"] == reference["applied"]
    layers = [r["layers"] for r in ranks]
    assert layers[0][0] == 0 and layers[-1][1] == 4  # 2 dual-stream + 2 single-stream blocks, cut in `world`
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(layers, layers[1:]))
    assert not any(r["latents"] for r in ranks[1:])


def test_blocks_see_their_neighbours(hunyuan_dir, reference):
    alone = frame_render(0, 1, hunyuan_dir, dict(MULTI, context_frames=0), 6.0)["latents"]
    assert not torch.allclose(alone[1], reference["latents"][1], atol=1e-4)
