"""CogVideoX jobs rendered as one block on row bands (``parallel.strategy=patch``, the family's patch plan) over
real gloo processes: sync bands on 2 workers equal one worker rendering the whole video as one block for the 1.0
(sincos positions added by the patch embedding) and 1.5 (temporal patch, rotary positions) layouts, and on 3
workers for 1.0; displaced bands run and stay close; what does not split is refused at submit. The one worker
renders through the frame plan, which test_cogvideox.py holds to ``CogVideoXPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields
from _parallel_dist import run_ranks
from _tiny_cogvideox import save_tiny_cogvideox
from _video_workers import render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

VERSIONS = ("1.0", "1.5")
VIDEO = dict(  # 4 latent frames of 8 x 8 latent pixels (1.5's rotary reaches its 8 x 8 sample size): 4 patch rows
    prompt="red stripes", negative_prompt="blurry", guidance_scale=5.0, height=32, width=32, frames=16,
    block_frames=16, context_frames=0, steps=2, seed=3,
)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cogvideox")
    return {v: str(save_tiny_cogvideox(root / f"tiny-{v}", version=v, layers=2)) for v in VERSIONS}


@pytest.fixture(scope="module")
def references(dirs, tmp_path_factory):
    """One worker, the whole video as one block (no bands), per layout."""
    out = str(tmp_path_factory.mktemp("one"))
    return {v: render_session(0, 1, d, out, band_fields(VIDEO, "none", 1))["latents"][0] for v, d in dirs.items()}


def test_two_workers_sync_per_layout_and_displaced(dirs, references, tmp_path):
    renders = [(dirs[v], str(tmp_path), band_fields(VIDEO, "patch", 2)) for v in VERSIONS]
    renders.append((dirs["1.5"], str(tmp_path), band_fields(VIDEO, "patch", 2, mode="displaced", warmup_steps=1)))
    got, other = run_ranks(render_sessions, 2, renders, timeout=240)
    for k, version in enumerate(VERSIONS):
        diff = (got[k]["latents"][0] - references[version]).abs().max().item()
        print(f"cogvideox {version} patch sync (2 workers) vs 1 worker: max abs diff {diff:.2e}")
        torch.testing.assert_close(got[k]["latents"][0], references[version], atol=1e-4, rtol=1e-4)
        bands = got[k]["report"]["bands"]
        assert bands["mode"] == "sync" and bands["bands"] == [(0, 4), (4, 8)] and any(bands["bytes_sent"].values())
        assert got[k]["report"]["blocks"] == 1 and not other[k]["latents"]
    stale = got[len(VERSIONS)]
    diff = (stale["latents"][0] - references["1.5"]).abs().max().item()
    print(f"cogvideox 1.5 patch displaced (warmup 1 of 2 steps) vs 1 worker: max abs diff {diff:.2e}")
    assert stale["report"]["bands"]["mode"] == "displaced"
    assert 0 < diff < 0.5 * references["1.5"].abs().max().item()


def test_three_workers_sync(dirs, references, tmp_path):
    got = run_ranks(render_session, 3, dirs["1.0"], str(tmp_path), band_fields(VIDEO, "patch", 3), timeout=240)
    diff = (got[0]["latents"][0] - references["1.0"]).abs().max().item()
    print(f"cogvideox 1.0 patch sync (3 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got[0]["latents"][0], references["1.0"], atol=1e-4, rtol=1e-4)
    assert got[0]["report"]["bands"]["bands"] == [(0, 4), (4, 6), (6, 8)]


def test_refused_at_submit(dirs):
    base = dict(VIDEO, model=dirs["1.0"])
    spec = VideoSpec.from_dict({**base, "block_frames": 8, "context_frames": 4, "parallel": {"strategy": "patch", "degree": 2}})
    assert (spec.block_frames, spec.context_frames, spec.blocks) == (16, 0, 1) and spec.notes
    for parallel, field in (
        ({"strategy": "patch", "degree": 5}, "parallel.degree"),  # 8 latent rows: 4 bands of a patch row at most
        ({"strategy": "patch", "degree": "auto"}, "parallel.degree"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, "parallel": parallel})
        assert err.value.field == field, parallel
