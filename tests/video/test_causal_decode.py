"""A causal VAE's whole-block decode off stage 0: the plan places it on the stage where it lengthens the render
least, and a render whose stage 1 decodes every block (its own stateful block decoder, the frames sent to stage 0)
writes the frames stage 0's decode writes, in order, also when stopped at a tick and continued from its
checkpoint with the decoder state gathered from stage 1 (restored on stage 1, or on stage 0). Real gloo processes,
tiny diffusers pipelines: Wan (its feature cache across blocks), HunyuanVideo (earlier latent frames decoded
again) and LTX-Video (decoded in windows, a block's frames held back until the frames after it are in)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from _causal_decode_workers import causal_renders
from _parallel_dist import run_ranks
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan_pipeline import save_tiny_wan_pipeline

from parallel.frames.partition import plan_seconds, stage_plan
from parallel.frames.schedule import tick_profile


def test_plan_puts_a_causal_decode_off_a_heavy_stage_0():
    layers = [0.03, 0.004, 0.004, 0.004, 0.004, 0.008]  # the embedding makes layer 0 outweigh the rest
    profile = tick_profile(32, 10)
    loads = lambda c: [sum(layers[a:b]) for a, b in zip(c, c[1:])]  # noqa: E731
    seconds = lambda c, s: plan_seconds(loads(c), [f * 0.002 for f in s], Counter(profile))  # noqa: E731
    cut, shares = stage_plan(layers, 2, profile, frame_s=0.002, frames=8)
    assert cut == [0, 1, 6] and shares == [0, 8]
    on_0 = stage_plan(layers, 2, profile, frame_s=0.002, frames=8, decode_stage=0)
    assert on_0[1] == [8, 0] and seconds(cut, shares) < 0.97 * seconds(*on_0)
    cut3, shares3 = stage_plan(layers, 3, profile, frame_s=0.002, frames=8)
    assert shares3[0] == 0 and sorted(shares3) == [0, 0, 8]
    forced = stage_plan(layers, 3, profile, frame_s=0.002, frames=8, decode_stage=2)[1]
    assert forced == [0, 0, 8]
    # balanced layers: stage 0 keeps it (the cut makes room), as before
    assert stage_plan([0.0075, 0.006, 0.006, 0.006, 0.006, 0.008], 2, profile, 0.022, 8)[1] == [8, 0]
    with pytest.raises(ValueError, match="decode_stage"):
        stage_plan(layers, 2, profile, 0.002, 8, by_frames=True, decode_stage=1)


WAN = dict(
    dtype="float32",
    prompt="red and yellow stripes",
    height=32,
    width=32,
    frames=24,  # 6 latent frames: 3 blocks of 2, 5 + 8 + 8 = 21 video frames
    block_frames=8,
    context_frames=4,
    steps=3,
    seed=0,
    fps=8.0,
    parallel={"degree": 2},
)
HUNYUAN = dict(WAN, prompt="red and blue stripes", guidance_scale=6.0, steps=2, seed=6)
LTX = dict(WAN, height=64, width=64, frames=48, block_frames=16, context_frames=8, decode_context=2)
"""6 latent frames in 3 blocks of 2, each decoded with 2 latent frames of context each way: block 0 is held back
until block 1 is in (no frames), block 1 gives block 0's 9 frames, block 2 the other 32."""
SCENARIOS = {
    "stage 0": (0, None, None),
    "stage 1": (1, None, None),
    "stage 1, resumed on 1": (1, 3, 1),
    "stage 1, resumed on 0": (1, 3, 0),
}
"""name: (decoding stage, tick stopped at, decoding stage after the resume); block 0 is written before tick 3."""


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("causal")
    return {
        "wan": (save_tiny_wan_pipeline(root / "wan"), WAN, [5, 8, 8]),
        "hunyuan": (save_tiny_hunyuanvideo(root / "hunyuan"), HUNYUAN, [0, 0, 21]),  # held back for 4 latent frames
        "ltx": (save_tiny_ltx(root / "ltx"), LTX, [0, 9, 32]),
    }


@pytest.mark.parametrize("family", ["wan", "hunyuan", "ltx"])
def test_decode_on_stage_1_writes_what_stage_0_writes(model_dirs, family):
    model_dir, fields, written = model_dirs[family]
    got, stage1 = run_ranks(causal_renders, 2, str(model_dir), fields, SCENARIOS, timeout=300)
    reference = got["stage 0"]
    assert [len(b) for b in reference["written"]] == written
    assert reference["reports"][-1]["decode_shares"] == [2, 0] and stage1["stage 0"]["reports"][-1]["decode_cpu_s"] == 0
    for name in list(SCENARIOS)[1:]:
        run, other = got[name], stage1[name]
        last = 0 if SCENARIOS[name][2] == 0 else 1  # the stage decoding at the end
        assert run["reports"][-1]["decode_shares"] == ([2, 0] if last == 0 else [0, 2]), name
        assert other["reports"][-1]["decode_cpu_s"] > 0 if last == 1 else run["reports"][-1]["decode_cpu_s"] > 0
        assert (run if last == 1 else other)["reports"][-1]["decode_cpu_s"] == 0, name
        if SCENARIOS[name][1] is not None:  # the checkpoint holds stage 1's decoder state
            assert run["reports"][0] == {"decoder_state": True, "tick": 3}
        assert sorted(run["latents"]) == [0, 1, 2]
        for block, latent in reference["latents"].items():
            torch.testing.assert_close(run["latents"][block], latent, atol=1e-4, rtol=1e-4)
        assert len(run["written"]) == 3, name
        for block, (frames, expected) in enumerate(zip(run["written"], reference["written"])):
            assert frames.shape == expected.shape and frames.dtype == np.uint8, (name, block)
            # the latents equal up to float rounding, so a pixel may round the other way
            diff = np.abs(frames.astype(int) - expected.astype(int))
            assert not diff.size or (diff.max() <= 1 and diff.mean() < 0.01), (name, block)


@pytest.mark.parametrize("family", ["cogvideox", "ltx"])
def test_block_decoders_decode_the_frames_stage_0_expects(tmp_path, family):
    """Stage 0 sizes each block's frames from the family's ``video_frames``: the other causal families' block
    decoders (rendered on 2 stages in their own tests, where the plan decides) decode that many, block by block."""
    from _tiny_cogvideox import save_tiny_cogvideox

    from pipelines.families import family_for_dir
    from runtime.jobs.video_session import block_video_frames

    torch.set_num_threads(1)
    save, pixels = {"cogvideox": (save_tiny_cogvideox, 32), "ltx": (save_tiny_ltx, 64)}[family]
    model_dir = save(tmp_path / family)
    pipe = family_for_dir(model_dir).load(model_dir, "float32", "cpu")
    channels, height, width = pipe.latent_shape(pixels, pixels)
    decode = pipe.block_decoder()
    generator = torch.Generator().manual_seed(0)
    counts = [
        len(decode(torch.randn(1, channels, 2, height, width, generator=generator))) for _ in range(3)
    ]
    assert counts == [block_video_frames(pipe, 2, block) for block in range(3)]
    assert sum(counts) == pipe.video_frames(6)
