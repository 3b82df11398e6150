"""CogVideoX jobs under Tessera's own Ulysses (``parallel.strategy=sequence``: diffusers ships no ``_cp_plan`` for
the model), over real gloo processes: the video split into row bands, Q/K/V exchanged by heads, on 2 workers equals
one worker rendering the whole video as one block for the 1.0 (sincos positions added by the patch embedding) and
1.5 (temporal patch, rotary positions) layouts, and on 3 workers (uneven bands) for 1.0; what does not split is
refused at submit. The one worker renders through the frame plan, which test_cogvideox.py holds to
``CogVideoXPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields, check_ulysses_refusals
from _parallel_dist import run_ranks
from _tiny_cogvideox import save_tiny_cogvideox
from _video_workers import render_session, render_sessions

VERSIONS = ("1.0", "1.5")
VIDEO = dict(  # 4 latent frames of 8 x 8 latent pixels: 4 patch rows; guided, so both branches go through
    prompt="red stripes", negative_prompt="blurry", guidance_scale=5.0, height=32, width=32, frames=16,
    block_frames=16, context_frames=0, steps=2, seed=3,
)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)  # 6 heads: Ulysses on 2 and 3 workers
    root = tmp_path_factory.mktemp("cogvideox")
    return {v: str(save_tiny_cogvideox(root / f"tiny-{v}", version=v, layers=2, heads=6)) for v in VERSIONS}


@pytest.fixture(scope="module")
def references(dirs, tmp_path_factory):
    """One worker, the whole video as one block, per layout."""
    out = str(tmp_path_factory.mktemp("one"))
    return {v: render_session(0, 1, d, out, band_fields(VIDEO, "none", 1))["latents"][0] for v, d in dirs.items()}


def _check(result: dict, reference: torch.Tensor, label: str, workers: int, bands: list, rank: int = 0) -> None:
    if rank == 0:
        diff = (result["latents"][0] - reference).abs().max().item()
        print(f"cogvideox {label} sequence (Ulysses, {workers} workers) vs 1 worker: max abs diff {diff:.2e}")
        torch.testing.assert_close(result["latents"][0], reference, atol=1e-4, rtol=1e-4)
    report = result["report"]["sequence"]
    assert (report["ulysses"], report["ring"], report["bands"]) == (workers, 1, bands)
    assert set(report["bytes_sent"]) == {"ulysses", "meta"}  # Q/K/V and outputs by heads (no K/V), band shapes
    assert sorted(report["bytes_sent"]["ulysses"]) == sorted(set(range(workers)) - {rank})


def test_two_workers_per_layout(dirs, references, tmp_path):
    renders = [(dirs[v], str(tmp_path), band_fields(VIDEO, "sequence", 2)) for v in VERSIONS]
    ranks = run_ranks(render_sessions, 2, renders, timeout=240)
    for k, version in enumerate(VERSIONS):
        for rank in (0, 1):
            _check(ranks[rank][k], references[version], version, 2, [(0, 4), (4, 8)], rank)


def test_three_workers(dirs, references, tmp_path):
    got = run_ranks(render_session, 3, dirs["1.0"], str(tmp_path), band_fields(VIDEO, "sequence", 3), timeout=240)
    for rank in range(3):
        _check(got[rank], references["1.0"], "1.0", 3, [(0, 4), (4, 6), (6, 8)], rank)


def test_refused_at_submit(dirs):
    check_ulysses_refusals(dict(VIDEO, model=dirs["1.0"]))
