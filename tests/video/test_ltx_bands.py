"""LTX-Video jobs rendered as one block on row bands (``parallel.strategy=patch``, the family's patch plan: the model
learns its bands from packed tokens) over real gloo processes: sync bands on 2 and 3 workers equal one worker
rendering the whole video as one block, with the prompt's padding mask and both guidance branches; displaced bands
run and stay close; what does not split is refused at submit. The one worker renders through the frame plan, which
test_ltx_pipeline.py holds to ``LTXPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields, check_three_workers_sync, check_two_workers_sync_and_displaced
from _tiny_ltx import save_tiny_ltx
from _video_workers import render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

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
    return render_session(0, 1, ltx_dir, str(tmp_path_factory.mktemp("one")), band_fields(VIDEO, "none", 1))["latents"][0]


def test_two_workers_sync_and_displaced(ltx_dir, reference, tmp_path):
    check_two_workers_sync_and_displaced("ltx", ltx_dir, VIDEO, reference, str(tmp_path), [(0, 2), (2, 3)])


def test_three_workers_sync(ltx_dir, reference, tmp_path):
    check_three_workers_sync("ltx", ltx_dir, VIDEO, reference, str(tmp_path), [(0, 1), (1, 2), (2, 3)])


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
