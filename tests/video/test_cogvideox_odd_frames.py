"""CogVideoX at its model cards' frame counts: diffusers' 4k+1 frames make an odd number of latent frames (49: 13),
which ``CogVideoXPipeline`` renders as a whole video: 1.0 decodes them with an odd first chunk of 3 latent frames,
and 1.5, whose temporal patch takes latent frames in pairs, draws one more at the front and drops it before
decoding. A one-block video of such a count does the same: ``frames=9`` (3 latent frames) equals
``CogVideoXPipeline(num_frames=9)`` in its latents and its 9 decoded frames, for both configs, and 1.5's padded
video splits over 2 workers under ``sequence`` and ``patch`` as one worker renders it. Odd blocks in a video of
several are still refused at submit (their decode chunks would not fall where the pipeline's fall)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _band_checks import band_fields
from _parallel_dist import run_ranks
from _tiny_cogvideox import TEXT_TOKENS, save_tiny_cogvideox
from _video_workers import NpyFrames, render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, block_step_seed, noise_template

SIZE, SEED, FRAMES = 32, 5, 9
TASK = dict(
    prompt="red and yellow stripes", negative_prompt="blurry", height=SIZE, width=SIZE, frames=FRAMES,
    block_frames=FRAMES, context_frames=0, steps=3, seed=SEED, guidance_scale=3.0, dtype="float32",
)
RENDERED = {"1.0": 3, "1.5": 4}
"""Latent frames each config renders for 9 frames: 1.5 pads the 3 to its temporal patch."""


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cogvideox-odd")
    return {
        "1.0": str(save_tiny_cogvideox(root / "tiny-1.0", "1.0", "ddim", layers=2, heads=6)),
        "1.5": str(save_tiny_cogvideox(root / "tiny-1.5", "1.5", "dpm", layers=2, heads=6)),
    }


@pytest.mark.parametrize("version", sorted(RENDERED))
@torch.no_grad()
def test_one_block_of_nine_frames_equals_the_pipeline(dirs, tmp_path, version):
    from diffusers import CogVideoXPipeline

    torch.set_num_threads(1)
    sink = NpyFrames(str(tmp_path / "frames.npy"))
    got = render_session(0, 1, dirs[version], str(tmp_path), TASK, make_writer=lambda: sink)
    rendered = RENDERED[version]
    assert got["report"]["latent_frames"] == rendered and got["report"]["frames"] == FRAMES
    initial = block_noise(noise_template(SEED, (4, rendered, SIZE // 4, SIZE // 4)), SEED, 0)
    reference = CogVideoXPipeline.from_pretrained(dirs[version], local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    call = dict(
        prompt=TASK["prompt"], negative_prompt=TASK["negative_prompt"], height=SIZE, width=SIZE, num_frames=FRAMES,
        num_inference_steps=TASK["steps"], guidance_scale=TASK["guidance_scale"], latents=initial.transpose(1, 2),
        **({"max_sequence_length": TEXT_TOKENS} if version == "1.0" else {}),  # 1.0's sincos table: 12 tokens
    )

    def pipeline(output_type: str):
        generator = torch.Generator().manual_seed(block_step_seed(SEED, 0))  # the DPM scheduler's step noise
        return reference(**call, generator=generator, output_type=output_type).frames

    expected = pipeline("latent").transpose(1, 2)  # every latent frame rendered, the padded one too
    diff = (got["latents"][0] - expected).abs().max().item()
    print(f"cogvideox {version}, frames=9 vs CogVideoXPipeline(num_frames=9): latents max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)
    video = (pipeline("np")[0] * 255).round().astype(np.int64)
    frames = np.concatenate(sink.blocks).astype(np.int64)
    assert frames.shape == video.shape == (FRAMES, SIZE, SIZE, 3)
    levels = int(np.abs(frames - video).max())
    print(f"cogvideox {version}, frames=9: decoded frames at most {levels} levels from the pipeline's")
    assert levels <= 1  # the pipeline's float frames are rounded to 8 bits here, Tessera's by its own rule


def test_the_padded_video_splits_as_one_worker_renders_it(dirs, tmp_path):
    reference = render_session(0, 1, dirs["1.5"], str(tmp_path), band_fields(TASK, "none", 1))["latents"][0]
    assert reference.shape[2] == RENDERED["1.5"]
    renders = [(dirs["1.5"], str(tmp_path), band_fields(TASK, strategy, 2)) for strategy in ("sequence", "patch")]
    got = run_ranks(render_sessions, 2, renders, timeout=240)
    for strategy, result in zip(("sequence", "patch"), got[0]):
        diff = (result["latents"][0] - reference).abs().max().item()
        print(f"cogvideox 1.5, frames=9 padded, {strategy} on 2 workers vs 1: max abs diff {diff:.2e}")
        torch.testing.assert_close(result["latents"][0], reference, atol=1e-4, rtol=1e-4)
        assert result["report"]["frames"] == FRAMES


def test_odd_blocks_are_taken_only_as_the_whole_video(dirs):
    for version, model in dirs.items():
        alone = {"strategy": "none", "degree": 1}
        spec = VideoSpec.from_dict(dict(TASK, model=model, frames=49, block_frames=49, parallel=alone))
        assert (spec.frames, spec.block_frames, spec.blocks) == (52, 52, 1), version
        padded = [note for note in spec.notes if "drawn and dropped before decoding" in note]
        assert padded == ([] if version == "1.0" else [
            "frames: this CogVideoX 1.5 transformer's temporal patch takes latent frames in pairs, so the video renders "
            "14 latent frames for its 13, the first 1 drawn and dropped before decoding, as CogVideoXPipeline pads them"
        ]), version
        rounded = VideoSpec.from_dict(dict(TASK, model=model, frames=49, block_frames=8))
        assert rounded.frames == 56, version
        assert "block_frames: for exactly the 13 latent frames of frames=49, set it to one of 52" in rounded.notes
        with pytest.raises(SpecError, match="block_frames: a CogVideoX block must hold an even number"):
            VideoSpec.from_dict(dict(TASK, model=model, frames=24, block_frames=12))
