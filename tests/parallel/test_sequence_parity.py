"""Sequence parallelism (diffusers' context parallelism over a gloo group) equals one device, on a tiny Flux."""

import _sequence_models as S
import _sequence_workers as W
import pytest
import torch
from _parallel_dist import run_ranks

TOL = {"atol": 1e-4, "rtol": 1e-4}
_runs: dict[int, list] = {}


def _run(world: int) -> list:
    if world not in _runs:
        _runs[world] = run_ranks(W.sequence_scenarios, world, timeout=240)
    return _runs[world]


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return S.reference()


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_two_ranks_equal_one_device(reference, mode):
    for r in _run(2):
        got = r[mode]
        for branch in ("cond", "uncond"):
            torch.testing.assert_close(got[branch], reference[branch], **TOL)
        torch.testing.assert_close(got["loop"], reference["loop"], **TOL)


def test_ulysses_and_ring_on_four_ranks_equal_one_device(reference):
    for r in _run(4):
        got = r["ulysses_x_ring"]
        torch.testing.assert_close(got["cond"], reference["cond"], **TOL)
        torch.testing.assert_close(got["loop"], reference["loop"], **TOL)


def test_ulysses_x_cfg_on_four_ranks_equals_one_device(reference):
    results = [r["ulysses_x_cfg"] for r in _run(4)]
    assert [r["branch"] for r in results] == ["cond", "cond", "uncond", "uncond"]
    assert [r["replica"] for r in results] == [0, 0, 1, 1]
    for rank, r in enumerate(results):
        torch.testing.assert_close(r["loop"], reference["loop"], **TOL)
        assert r["partner"] == (rank + 2) % 4
        assert set(r["cfg_bytes"]["cfg"]) == {r["partner"]}
        # the sequence's collectives stay inside the branch's half
        half = {0, 1} if rank < 2 else {2, 3}
        peers = {peer for peers in r["bytes"].values() for peer in peers}
        assert peers == half - {rank}


def test_traffic_is_counted_by_kind_and_peer():
    ulysses, ring = _run(2)[0]["ulysses"], _run(2)[0]["ring"]
    # Ulysses: all-to-alls of q, k, v and the attention output in each of the 2 blocks, then the output gather
    assert set(ulysses["bytes_forward"]) == {"all_to_all", "all_gather"}
    assert set(ring["bytes_forward"]) == {"all_gather"}  # Ring gathers K/V shards; no all-to-all
    assert all(set(peers) == {1} for peers in ulysses["bytes_forward"].values())
    # the final gather sends this rank's half of the packed output: 12 of 24 tokens x 16 channels x 4 bytes
    assert ulysses["bytes_forward"]["all_gather"][1] == 12 * 16 * 4
    # measured on the first forward, then added per forward of the same shapes: 2 forwards, then 2 per step
    for r in (ulysses, ring):
        forwards = 2 + 2 * S.STEPS
        assert r["bytes_total"] == {k: {p: n * forwards for p, n in v.items()} for k, v in r["bytes_forward"].items()}


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_remove_restores_the_model(reference, mode):
    for r in _run(2):
        got = r[mode]
        assert got["restored"] and got["bytes_unchanged_after_remove"]
        torch.testing.assert_close(got["after_remove"]["cond"], reference["cond"], **TOL)
        assert "already parallel" in got["twice"]


def test_ring_on_cpu_says_what_it_took():
    notes = " ".join(_run(2)[0]["ring"]["notes"])
    assert "_native_flash" in notes and "device_count" in notes
