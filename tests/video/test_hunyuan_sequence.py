"""HunyuanVideo jobs under Tessera's own Ulysses (``parallel.strategy=sequence``: diffusers ships no ``_cp_plan`` for
the model), over real gloo processes: the video split into row bands, Q/K/V exchanged by heads, on 2 workers
(uneven bands) and 3 equals one worker rendering the whole video as one block, with a padded prompt (the joint
attention's text mask matters); what does not split is refused at submit. The one worker renders through the
frame plan, which test_hunyuan_pipeline.py holds to ``HunyuanVideoPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields, check_ulysses_refusals
from _parallel_dist import run_ranks
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _video_workers import render_session

VIDEO = dict(  # 3 latent frames x 6 x 4 latent pixels: 3 x 2 patches of 2 rows; the prompt pads 16 tokens
    prompt="red stripes", guidance_scale=6.0, height=48, width=32, frames=12, block_frames=12, context_frames=0,
    steps=2, seed=5,
)


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)  # 6 heads: Ulysses on 2 and 3 workers
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny-hunyuanvideo", heads=6))


@pytest.fixture(scope="module")
def reference(hunyuan_dir, tmp_path_factory):
    """One worker, the whole video as one block."""
    return render_session(0, 1, hunyuan_dir, str(tmp_path_factory.mktemp("one")), band_fields(VIDEO, "none", 1))["latents"][0]


@pytest.mark.parametrize("workers,bands", [(2, [(0, 4), (4, 6)]), (3, [(0, 2), (2, 4), (4, 6)])])
def test_ulysses_equals_one_worker(hunyuan_dir, reference, tmp_path, workers, bands):
    got = run_ranks(render_session, workers, hunyuan_dir, str(tmp_path), band_fields(VIDEO, "sequence", workers), timeout=240)
    diff = (got[0]["latents"][0] - reference).abs().max().item()
    print(f"hunyuanvideo sequence (Ulysses, {workers} workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got[0]["latents"][0], reference, atol=1e-4, rtol=1e-4)
    for rank, result in enumerate(got):
        report = result["report"]["sequence"]
        assert (report["ulysses"], report["ring"], report["bands"]) == (workers, 1, bands)
        assert set(report["bytes_sent"]) == {"ulysses", "meta"}  # Q/K/V and outputs by heads (no K/V), band shapes
        assert sorted(report["bytes_sent"]["ulysses"]) == sorted(set(range(workers)) - {rank})


def test_refused_at_submit(hunyuan_dir):
    check_ulysses_refusals(dict(VIDEO, model=hunyuan_dir))
