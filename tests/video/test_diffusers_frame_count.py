"""A video's ``frames`` in diffusers' count: a causal VAE's first latent frame is one frame, so its pipelines take
``num_frames = 1 + k n`` (Wan's 81, CogVideoX's 49, HunyuanVideo's 129, LTX-Video's 161), where Tessera counts k
frames per latent frame. Such a count is taken as the pipeline takes it: validation stores it in Tessera's count
with a note, an in-process session reads it directly, and a Wan one-block render of ``frames=9`` equals
``WanPipeline(num_frames=9)`` from the same initial latents, 9 frames written."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import one_block_reference
from _tiny_cogvideox import save_tiny_cogvideox
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from cluster.jobs.video import VideoSpec
from pipelines.families import family_for_dir
from pipelines.frame_counts import latent_frame_count

PROMPT, SIZE, SEED = "red and yellow stripes", 32, 5
SAVERS = {
    "wan": save_tiny_wan_pipeline,
    "cogvideox": save_tiny_cogvideox,
    "hunyuanvideo": save_tiny_hunyuanvideo,
    "ltx": save_tiny_ltx,
}


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan-count") / "tiny-wan")


def spec_of(model_dir, **fields) -> VideoSpec:
    task = dict(model=str(model_dir), prompt=PROMPT, height=SIZE, width=SIZE, steps=2, guidance_scale=1.0)
    return VideoSpec.from_dict({**task, **fields})


def test_the_count_rule():
    assert latent_frame_count(84, 4) == 21 and latent_frame_count(81, 4) == 21 and latent_frame_count(1, 4) == 1
    assert latent_frame_count(161, 8) == 21 and latent_frame_count(7, 1) == 7
    with pytest.raises(ValueError, match=r"frames: .*multiple of 4 or one more \(diffusers' num_frames"):
        latent_frame_count(82, 4)
    with pytest.raises(ValueError, match="block_frames: .*multiple of 4, got 9"):  # a block has no first frame
        latent_frame_count(9, 4, "block_frames")


@pytest.mark.parametrize("family", sorted(SAVERS))
def test_validation_stores_a_diffusers_count_as_the_same_latent_frames(family, tmp_path):
    model_dir = SAVERS[family](tmp_path / family)
    factor = family_for_dir(model_dir).temporal_factor(model_dir)
    assert factor > 1
    count = 1 + factor * 5  # 6 latent frames, as the pipeline's num_frames
    spec = spec_of(model_dir, frames=count, block_frames=2 * factor, context_frames=0)
    assert spec.frames == 6 * factor and spec.stored()["frames"] == 6 * factor
    assert any(note.startswith(f"frames: {count} is diffusers' count") for note in spec.notes)
    stored = {k: v for k, v in spec.stored().items() if k not in ("job", "notes")}
    again = VideoSpec.from_dict(stored)  # a stored job read back: the same latent frames, nothing converted twice
    assert again.frames == spec.frames and not any("diffusers' count" in note for note in again.notes)


def test_a_count_rounded_to_whole_blocks_says_which_block_sizes_are_exact(wan_dir):
    spec = spec_of(wan_dir, frames=81, block_frames=8)
    assert spec.frames == 88  # 21 latent frames rounded up to blocks of 2
    assert "block_frames: for exactly the 21 latent frames of frames=81, set it to one of 4, 12, 28, 84" in spec.notes
    exact = spec_of(wan_dir, frames=81, block_frames=12)
    assert exact.frames == 84 and not any(note.startswith("block_frames") for note in exact.notes)
    whole = spec_of(wan_dir, frames=9, parallel={"strategy": "sequence", "degree": 2})
    assert (whole.frames, whole.block_frames) == (12, 12)
    assert spec_of(wan_dir, frames=84, block_frames=12).notes == [  # Tessera's own count: what the MP4 holds
        "frames: the video's 84 frames in Tessera's count decode to 81 (the VAE decodes its first latent frame to one "
        "frame; diffusers' num_frames=81); the MP4 holds 81"
    ]
    # one block, frames and block_frames both in diffusers' count
    one = spec_of(wan_dir, frames=9, block_frames=9, context_frames=0, parallel={"strategy": "none", "degree": 1})
    assert (one.frames, one.block_frames, one.blocks) == (12, 12, 1)


def test_exact_block_sizes_are_those_the_frame_plan_takes(tmp_path):
    """CogVideoX's blocks take an even number of latent frames, or an odd one as the whole video: for its model card's
    49 frames (13 latent frames) only one block of all of them renders them exactly."""
    cogvideox = save_tiny_cogvideox(tmp_path / "cogvideox")
    spec = spec_of(cogvideox, frames=49, block_frames=8, context_frames=0)
    assert spec.frames == 56
    assert "block_frames: for exactly the 13 latent frames of frames=49, set it to one of 52" in spec.notes
    four = spec_of(cogvideox, frames=29, block_frames=24, context_frames=0)  # 8 latent frames: 2, 4 and 8 fit
    assert "block_frames: for exactly the 8 latent frames of frames=29, set it to one of 8, 16, 32" in four.notes


@pytest.mark.parametrize("family", sorted(SAVERS))
def test_submit_says_how_many_frames_the_video_decodes_to(family, tmp_path):
    """The family's count at submit (from the configs) is the loaded pipeline's ``video_frames``; a count in
    Tessera's terms gets a note of it where they differ, diffusers' count (what the MP4 holds) none; CogVideoX's one
    block of an odd count too."""
    model_dir = SAVERS[family](tmp_path / family)
    family_of = family_for_dir(model_dir)
    factor = family_of.temporal_factor(model_dir)
    pipe = family_of.load(model_dir, "float32", "cpu")
    for latent, block in ((6, 2), (3, 3)):
        if family != "cogvideox" and block == 3:
            continue
        spec = spec_of(model_dir, frames=factor * latent, block_frames=factor * block, context_frames=0,
                       parallel={"strategy": "none" if block == latent else "frames", "degree": 1})
        decoded = pipe.video_frames(latent)
        assert family_of.decoded_frames(model_dir, spec) == decoded
        said = [note for note in spec.notes if "in Tessera's count decode to" in note]
        if decoded == factor * latent:  # CogVideoX's even count: nothing to say
            assert not said
            continue
        assert said == [f"frames: the video's {factor * latent} frames in Tessera's count decode to {decoded} (the "
                        f"VAE decodes its first latent frame to one frame; diffusers' num_frames={decoded}); the MP4 "
                        f"holds {decoded}"]
        diffusers = spec_of(model_dir, frames=decoded, block_frames=decoded if block == latent else factor * block,
                            context_frames=0, parallel={"strategy": "none" if block == latent else "frames", "degree": 1})
        assert diffusers.frames == factor * latent and not any("decode to" in note for note in diffusers.notes)


@torch.no_grad()
def test_a_wan_render_of_frames_9_equals_the_pipeline_called_with_num_frames_9(wan_dir, tmp_path):
    torch.set_num_threads(1)
    task = dict(prompt=PROMPT, height=SIZE, width=SIZE, frames=9, block_frames=9, context_frames=0, steps=3,
                seed=SEED, guidance_scale=1.0)
    got = render_session(0, 1, str(wan_dir), str(tmp_path), task)  # in-process, not validated: frames read as given
    assert got["report"]["frames"] == 9 and got["report"]["frames_written"] == 9
    reference, pipe, initial = one_block_reference(wan_dir, 3, SIZE, SEED)
    expected = reference(
        prompt=PROMPT, height=SIZE, width=SIZE, num_frames=9, num_inference_steps=3, guidance_scale=1.0,
        latents=initial, output_type="latent", return_dict=False,
    )[0]
    assert expected.shape[2] == 3
    diff = (got["latents"][0] - expected).abs().max().item()
    print(f"Wan, frames=9 vs WanPipeline(num_frames=9): max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)


def test_context_frames_in_part_of_a_latent_frame_are_said_to_round_up(wan_dir):
    spec = spec_of(wan_dir, frames=16, block_frames=8, context_frames=2)
    assert any(note.startswith("context_frames: 2 rounds up to 1 whole latent frame of") for note in spec.notes)
    assert "each neighbour block lends 4 frames" in " ".join(spec.notes)
    wide = spec_of(wan_dir, frames=16, block_frames=8, context_frames=5)
    assert "context_frames: 5 rounds up to 2 whole latent frames of this model's VAE (4 frames each): each neighbour " \
        "block lends 8 frames" in wide.notes
    for whole in (4, 1):  # whole latent frames, and the default: the nearest one
        assert not any(n.startswith("context_frames") for n in spec_of(wan_dir, frames=16, context_frames=whole).notes)
