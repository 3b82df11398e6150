"""Frame-pipeline traffic formula agrees with the bytes the real frame pipeline counts (2 and 3 stages)."""

from __future__ import annotations

import copy

import _cost_workers as CW
import pytest
import torch
from _cost_common import run
from _video_models import LATENT, tiny_text, tiny_wan

from parallel.cost.profile import profile_module
from parallel.cost.traffic import frame_pipeline_traffic


def block_profile(block_frames: int):
    """Profile of the tiny Wan model on one frame block (batch 1, as the pipeline runs it), on meta."""
    model = copy.deepcopy(tiny_wan(layers=4)).to("meta")
    latent = torch.empty((1, LATENT[0], block_frames) + LATENT[1:], device="meta")
    t = torch.tensor([500], device="meta")
    text = tiny_text().to("meta")
    return profile_module(model, (latent, t, text), {}, kind="video-dit", frames=(block_frames - 1) * 4 + 1)


@pytest.mark.parametrize("world", [2, 3])
def test_frame_pipeline_bytes_match_the_counters(world):
    results = run(CW.frame_bytes, world)
    block = results[0]["config"]["block_frames"]
    prof = block_profile(block)
    traffic = frame_pipeline_traffic(prof, world, block_latent_frames=block)
    items = results[0]["items"]
    per_item = [sum(r["bytes"].values()) / items for r in results]
    hidden = prof.batch * prof.tokens * prof.hidden_bytes_per_token
    assert per_item[:-1] == [hidden] * (world - 1)  # stage s -> s+1: one block's hidden states per item
    assert per_item[-1] == prof.latent_bytes  # last stage -> stage 0: the block's model output
    assert traffic.total_bytes == pytest.approx(sum(per_item) / world)
    assert set(results[-1]["bytes"]) == {0} and all(set(r["bytes"]) == {s + 1} for s, r in enumerate(results[:-1]))
