"""LTX-Video's ``frame_rate``, a video job's field: ``LTXPipeline`` scales its rotary positions in time by the VAE's
frames per latent frame over it, so the rate changes the video the model makes. One block at ``frame_rate=12``
equals ``LTXPipeline(frame_rate=12)`` from the same initial latents and differs from the default 25; ``sequence``
and ``patch`` on 2 workers take it as one worker does; validation refuses it, naming the field, for another family
or out of range."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields
from _diffusers_reference import one_block_reference
from _parallel_dist import run_ranks
from _tiny_ltx import save_tiny_ltx
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

PROMPT, SEED, SIZE, RATE = "red and yellow stripes", 3, 32, 12.0
TASK = dict(prompt=PROMPT, height=SIZE, width=SIZE, frames=16, block_frames=16, context_frames=0, steps=2, seed=SEED,
            guidance_scale=1.0, dtype="float32")
"""One block of 2 latent frames (LTX's VAE in the tiny pipeline: 8 frames per latent frame)."""


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_ltx(tmp_path_factory.mktemp("ltx-rate") / "tiny-ltx"))


@torch.no_grad()
def pipeline_latents(model_dir: str, **call) -> torch.Tensor:
    """``LTXPipeline`` called directly from Tessera's initial latents; its final latents, unpacked."""
    reference, pipe, initial = one_block_reference(model_dir, 2, SIZE, SEED)
    packed = reference(
        prompt=PROMPT, height=SIZE, width=SIZE, num_frames=1 + pipe.temporal_factor, num_inference_steps=2,
        guidance_scale=1.0, latents=reference._pack_latents(initial), output_type="latent", return_dict=False, **call,
    )[0]
    return reference._unpack_latents(packed, 2, *initial.shape[3:])


def test_one_block_at_a_frame_rate_equals_the_pipeline_called_with_it(ltx_dir, tmp_path):
    torch.set_num_threads(1)
    spec = VideoSpec.from_dict(dict(TASK, model=ltx_dir, frame_rate=RATE, parallel={"strategy": "none", "degree": 1}))
    assert spec.frame_rate == RATE
    got = render_session(0, 1, ltx_dir, str(tmp_path), dict(TASK, frame_rate=RATE))["latents"][0]
    expected = pipeline_latents(ltx_dir, frame_rate=RATE)
    diff = (got - expected).abs().max().item()
    print(f"LTX-Video, frame_rate={RATE} vs LTXPipeline(frame_rate={RATE}): max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    default = render_session(0, 1, ltx_dir, str(tmp_path), TASK)["latents"][0]
    moved = (default - got).abs().max().item()
    print(f"LTX-Video, frame_rate={RATE} vs the default 25: max abs diff {moved:.2e}")
    assert moved > 1e-3  # the rate reaches the model


def test_whole_video_strategies_take_the_frame_rate(ltx_dir, tmp_path):
    task = dict(TASK, frame_rate=RATE, height=64, width=64)  # 2 x 2 latent pixels: a row per worker
    reference = render_session(0, 1, ltx_dir, str(tmp_path), band_fields(task, "none", 1))["latents"][0]
    renders = [(ltx_dir, str(tmp_path), band_fields(task, strategy, 2)) for strategy in ("sequence", "patch")]
    got = run_ranks(render_sessions, 2, renders, timeout=240)
    for strategy, result in zip(("sequence", "patch"), got[0]):
        diff = (result["latents"][0] - reference).abs().max().item()
        print(f"LTX-Video, frame_rate={RATE}, {strategy} on 2 workers vs 1: max abs diff {diff:.2e}")
        torch.testing.assert_close(result["latents"][0], reference, atol=1e-4, rtol=1e-4)


def test_refused_where_no_pipeline_takes_it(ltx_dir, tmp_path):
    wan = str(save_tiny_wan_pipeline(tmp_path / "wan"))
    with pytest.raises(SpecError, match=r"frame_rate: is LTX-Video's; the wan family's pipeline takes none"):
        VideoSpec.from_dict(dict(TASK, model=wan, frames=8, block_frames=8, frame_rate=24))
    for bad in (0, -5, 500):
        with pytest.raises(SpecError, match=r"frame_rate: must be in \(0, 240\]"):
            VideoSpec.from_dict(dict(TASK, model=ltx_dir, frame_rate=bad))
    with pytest.raises(SpecError, match="frame_rate: expected int or float"):
        VideoSpec.from_dict(dict(TASK, model=ltx_dir, frame_rate="fast"))
