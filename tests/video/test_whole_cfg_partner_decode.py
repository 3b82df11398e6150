"""A whole-video strategy with a guidance branch per worker (``parallel.cfg`` on 2 workers) and a VAE whose frames
decode apart (the built-in model's per-frame VAE): both workers hold the finished latent, so the partner decodes
the later half of its frames and sends them to rank 0, which decodes the rest and writes the video (real gloo
processes). The frames are one worker's up to the latents' float rounding."""

from __future__ import annotations

import functools

import numpy as np
import torch
from _parallel_dist import run_ranks
from _video_workers import NpyFrames, render_session

from cluster.jobs.video import VideoParallelSpec
from pipelines.builtin import resolve_model

GUIDED = dict(  # one block of 8 frames: 8 latent frames of 4 x 4 (the per-frame VAE's factor 8)
    prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0, height=32, width=32, frames=8,
    block_frames=8, context_frames=0, steps=2, seed=4, dtype="float32",
)


def test_the_partner_decodes_half_of_a_whole_video_split(tmp_path):
    torch.set_num_threads(1)
    model = str(resolve_model("builtin-video"))
    one = render_session(0, 1, model, str(tmp_path), dict(GUIDED, parallel=VideoParallelSpec("none", 1)), "cpu",
                         functools.partial(NpyFrames, str(tmp_path / "one.npy")))
    split = run_ranks(
        render_session, 2, model, str(tmp_path), dict(GUIDED, parallel=VideoParallelSpec("sequence", 2, cfg=True)),
        "cpu", functools.partial(NpyFrames, str(tmp_path / "split.npy")), timeout=300,
    )
    torch.testing.assert_close(split[0]["latents"][0], one["latents"][0], atol=1e-4, rtol=1e-4)
    reports = [rank["report"] for rank in split]
    assert [r["cfg"]["branch"] for r in reports] == ["cond", "uncond"]
    assert all(r["decode_cpu_s"] > 0 for r in reports)  # each decoded its half
    sent = [r["cfg"]["bytes_sent"].get("frames", {}) for r in reports]
    assert not sent[0] and sum(sent[1].values()) == 4 * 8 + 4 * 32 * 32 * 3  # a shape, then 4 frames
    frames = [np.load(run["report"]["video"]).astype(int) for run in (split[0], one)]
    assert frames[0].shape == frames[1].shape == (8, 32, 32, 3)
    assert np.abs(frames[0] - frames[1]).max() <= 1  # latents 1e-7 apart: a level where one rounds the other way
