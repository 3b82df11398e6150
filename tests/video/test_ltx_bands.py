"""LTX-Video jobs rendered as one block on row bands (``parallel.strategy=patch``, the family's patch plan: the model
learns its bands from packed tokens) over real gloo processes: sync bands on 2 and 3 workers equal one worker
rendering the whole video as one block, with the prompt's padding mask and both guidance branches; displaced bands
run and stay close; what does not split is refused at submit. The one worker renders through the frame plan, which
test_ltx_pipeline.py holds to ``LTXPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_ltx import save_tiny_ltx
from _video_workers import render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec

VIDEO = dict(  # 3 latent frames of 3 x 2 latent pixels (32 pixels each): 3 rows to band
    prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0, height=96, width=64, frames=24,
    block_frames=24, context_frames=0, steps=2, seed=8,
)


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx"))


@pytest.fixture(scope="module")
def reference(ltx_dir, tmp_path_factory):
    """One worker, the whole video as one block (no bands)."""
    return render_session(0, 1, ltx_dir, str(tmp_path_factory.mktemp("one")), _fields("none", 1))["latents"][0]


def _fields(strategy: str, degree: int, **parallel) -> dict:
    return dict(VIDEO, dtype="float32", parallel=VideoParallelSpec(strategy, degree, **parallel))


def test_two_workers_sync_and_displaced(ltx_dir, reference, tmp_path):
    renders = [
        (ltx_dir, str(tmp_path), _fields("patch", 2)),
        (ltx_dir, str(tmp_path), _fields("patch", 2, mode="displaced", warmup_steps=1)),
    ]
    got, other = run_ranks(render_sessions, 2, renders, timeout=240)
    sync, displaced = got[0], got[1]
    diff = (sync["latents"][0] - reference).abs().max().item()
    print(f"ltx patch sync (2 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(sync["latents"][0], reference, atol=1e-4, rtol=1e-4)
    bands = sync["report"]["bands"]
    assert bands["mode"] == "sync" and bands["bands"] == [(0, 2), (2, 3)] and any(bands["bytes_sent"].values())
    assert sync["report"]["blocks"] == 1 and not other[0]["latents"]
    diff = (displaced["latents"][0] - reference).abs().max().item()
    print(f"ltx patch displaced (warmup 1 of 2 steps) vs 1 worker: max abs diff {diff:.2e}")
    assert displaced["report"]["bands"]["mode"] == "displaced" and 0 < diff < 0.5 * reference.abs().max().item()


def test_three_workers_sync(ltx_dir, reference, tmp_path):
    got = run_ranks(render_session, 3, ltx_dir, str(tmp_path), _fields("patch", 3), timeout=240)
    diff = (got[0]["latents"][0] - reference).abs().max().item()
    print(f"ltx patch sync (3 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got[0]["latents"][0], reference, atol=1e-4, rtol=1e-4)
    assert got[0]["report"]["bands"]["bands"] == [(0, 1), (1, 2), (2, 3)]


def test_refused_at_submit(ltx_dir):
    base = dict(VIDEO, model=ltx_dir)
    spec = VideoSpec.from_dict({**base, "block_frames": 8, "context_frames": 8, "parallel": {"strategy": "patch", "degree": 2}})
    assert (spec.block_frames, spec.context_frames, spec.blocks) == (24, 0, 1) and spec.notes
    for parallel, field in (
        ({"strategy": "patch", "degree": 4}, "parallel.degree"),  # 3 latent rows: 3 bands at most
        ({"strategy": "patch", "degree": "auto"}, "parallel.degree"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, "parallel": parallel})
        assert err.value.field == field, parallel
