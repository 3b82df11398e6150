"""A finished block's decode split by frames over the stages: the stage balance that places it, and a render
whose stages each decode a share of every block writing the same frames, in order, as one worker decoding
whole blocks, also when stopped at a tick and continued from its checkpoint (real gloo processes, the
built-in video model's per-frame VAE)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from _parallel_dist import run_ranks
from _split_decode_workers import split_render

from parallel.frames.partition import plan_seconds, stage_plan
from parallel.frames.schedule import queue_schedule, tick_profile


def test_tick_profile_counts_every_item_and_every_decode():
    for blocks, steps, stride in ((8, 10, 1), (3, 4, 4), (5, 3, 2)):
        profile = tick_profile(blocks, steps, stride)
        assert sum(items for items, _ in profile) == len(queue_schedule(blocks, steps, stride))
        assert sum(decoded for _, decoded in profile) == blocks
        assert profile[0][1] == 0 and profile[-1] == (0, 1)  # the last block is decoded after the last tick


def test_plan_splits_a_per_frame_decode_and_keeps_a_causal_one_whole():
    layers = [0.0075, 0.006, 0.006, 0.006, 0.006, 0.008]  # seconds per item: embed and head folded in
    profile = tick_profile(32, 10)
    cut, shares = stage_plan(layers, 2, profile, frame_s=0.022, frames=8, by_frames=True)
    assert cut == [0, 3, 6] and shares == [4, 4]
    whole_cut, whole = stage_plan(layers, 2, profile, frame_s=0.022, frames=8, by_frames=False)
    assert whole == [8, 0] and whole_cut == [0, 2, 6]  # stage 0 decodes (the cut balances it): fewer layers there
    one = plan_seconds([sum(layers)], [8 * 0.022], Counter(profile))
    loads = lambda c: [sum(layers[a:b]) for a, b in zip(c, c[1:])]  # noqa: E731
    split = plan_seconds(loads(cut), [s * 0.022 for s in shares], Counter(profile))
    unsplit = plan_seconds(loads(whole_cut), [s * 0.022 for s in whole], Counter(profile))
    assert one / split > 1.9 and one / unsplit < 1.8
    _, three = stage_plan(layers, 3, profile, frame_s=0.022, frames=8, by_frames=True)
    assert sum(three) == 8 and max(three) < 8


@pytest.fixture(scope="module")
def one_worker():
    return split_render(0, 1, None)["written"]


@pytest.mark.parametrize("shares, stop_tick", [([1, 3], None), ([2, 2], 3)])
def test_split_decode_writes_what_one_worker_writes(one_worker, shares, stop_tick):
    got, stage1 = run_ranks(split_render, 2, shares, stop_tick, timeout=240)
    assert stage1["written"] == [] and len(got["written"]) == len(one_worker) == 3
    for block, (frames, expected) in enumerate(zip(got["written"], one_worker)):
        assert frames.shape == expected.shape == (4, 32, 32, 3) and frames.dtype == np.uint8, block
        # the latents equal one worker's up to float rounding, so a pixel may round the other way
        diff = np.abs(frames.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, block
