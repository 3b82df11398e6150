"""The S-stage frame pipeline over real gloo processes equals the 1-worker run of the same schedule."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _video_workers import SCENARIOS, pipeline_scenarios, run_pipeline

_runs: dict[int, list] = {}
_refs: dict[str, dict] = {}


def _ranks(world: int) -> list:
    if world not in _runs:
        _runs[world] = run_ranks(pipeline_scenarios, world, timeout=180)
    return _runs[world]


def _reference(name: str) -> dict:
    if name not in _refs:
        torch.set_num_threads(1)
        _refs[name] = run_pipeline(SCENARIOS[name])
    return _refs[name]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["plain", "wide_context", "plain_segmented", "cfg", "strided"])
def test_stages_equal_one_worker(world, name):
    ref = _reference(name.replace("_segmented", ""))
    got = _ranks(world)[0][name]
    assert sorted(got["latents"]) == sorted(ref["latents"])
    for block, latent in ref["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
    assert got["applied"] == ref["applied"] and got["finished"] == ref["finished"]


@pytest.mark.parametrize("world", [2, 3])
def test_stages_equal_one_worker_in_bfloat16(world):
    """GPU farms render in bfloat16: the stages' activations cross the ring in it, and each stage runs the
    same ops on the same items as one worker, so the latents agree as closely as in float32."""
    if "bfloat16" not in _refs:
        torch.set_num_threads(1)
        _refs["bfloat16"] = run_pipeline(SCENARIOS["plain"], dtype=torch.bfloat16)
    ref = _refs["bfloat16"]
    got = _ranks(world)[0]["plain_bfloat16"]
    assert sorted(got["latents"]) == sorted(ref["latents"])
    for block, latent in ref["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
    # bfloat16 did run: its latents are not float32's
    assert not torch.allclose(ref["latents"][2].float(), _reference("plain")["latents"][2], atol=1e-3)


@pytest.mark.parametrize("world", [2, 3])
def test_every_stage_runs_its_share(world):
    ranks = _ranks(world)
    result = [r["plain"] for r in ranks]
    bounds = result[0]["boundaries"]
    assert all(r["boundaries"] == bounds for r in result)  # every rank cut the same way
    assert bounds[0] == 0 and bounds[-1] == 4 and len(bounds) == world + 1
    items = result[0]["stats"].items
    for rank, r in enumerate(result):
        stats = r["stats"]
        assert stats.layers == (bounds[rank], bounds[rank + 1]) and stats.layers[0] < stats.layers[1]
        assert stats.items == items  # every stage sees every block at every step
        assert sum(stats.bytes_sent.values()) > 0  # a ring: every stage sends to its successor
        assert stats.cache_peak_bytes > 0
        assert (
            0 < stats.inflight_peak <= SCENARIOS["plain"]["steps"] + 2 < stats.items
        )  # sends do not pile up
    assert not any(r["latents"] for r in result[1:])  # finished blocks leave from stage 0 only


def test_blocks_see_their_neighbours():
    """The feature cache changes the result: without context every block would be independent."""
    with_context = _reference("plain")["latents"]
    alone = run_pipeline(dict(SCENARIOS["plain"], context_frames=0))["latents"]
    assert not torch.allclose(with_context[2], alone[2], atol=1e-4)


def test_a_block_stride_starts_blocks_on_cleaner_context():
    """Stride 3 of 4 steps: the same blocks and steps, but a block meets its predecessor 3 steps on."""
    plain, strided = _reference("plain"), _reference("strided")
    assert sorted(strided["applied"]) == sorted(plain["applied"]) and strided["finished"] == plain["finished"]
    assert strided["applied"][:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert not torch.allclose(strided["latents"][2], plain["latents"][2], atol=1e-4)
