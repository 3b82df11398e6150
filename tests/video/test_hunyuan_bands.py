"""HunyuanVideo jobs rendered as one block on row bands (``parallel.strategy=patch``, the family's patch plan) over
real gloo processes: sync bands on 2 and 3 workers equal one worker rendering the whole video as one block, with a
padded prompt (the joint attention's text mask matters); displaced bands run and stay close; what does not split
is refused at submit. The one worker renders through the frame plan, which test_hunyuan_pipeline.py holds to
``HunyuanVideoPipeline`` itself."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields, check_three_workers_sync, check_two_workers_sync_and_displaced
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _video_workers import render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

VIDEO = dict(  # 3 latent frames x 6 x 4 latent pixels: 3 x 2 patches of 2 rows; the prompt pads 16 tokens
    prompt="red stripes", guidance_scale=6.0, height=48, width=32, frames=12, block_frames=12, context_frames=0,
    steps=2, seed=5,
)


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny-hunyuanvideo"))


@pytest.fixture(scope="module")
def reference(hunyuan_dir, tmp_path_factory):
    """One worker, the whole video as one block (no bands)."""
    return render_session(0, 1, hunyuan_dir, str(tmp_path_factory.mktemp("one")), band_fields(VIDEO, "none", 1))["latents"][0]


def test_two_workers_sync_and_displaced(hunyuan_dir, reference, tmp_path):
    check_two_workers_sync_and_displaced("hunyuanvideo", hunyuan_dir, VIDEO, reference, str(tmp_path), [(0, 4), (4, 6)])


def test_three_workers_sync(hunyuan_dir, reference, tmp_path):
    check_three_workers_sync("hunyuanvideo", hunyuan_dir, VIDEO, reference, str(tmp_path), [(0, 2), (2, 4), (4, 6)])


def test_refused_at_submit(hunyuan_dir):
    base = dict(VIDEO, model=hunyuan_dir)
    spec = VideoSpec.from_dict({**base, "block_frames": 4, "context_frames": 4, "parallel": {"strategy": "patch", "degree": 2}})
    assert (spec.block_frames, spec.context_frames, spec.blocks) == (12, 0, 1) and spec.notes
    for parallel, field in (
        ({"strategy": "patch", "degree": 4}, "parallel.degree"),  # 6 latent rows: 3 bands of a patch row at most
        ({"strategy": "patch", "degree": "auto"}, "parallel.degree"),
        ({"strategy": "patch", "degree": 2, "mode": "stale"}, "parallel.mode"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, "parallel": parallel})
        assert err.value.field == field, parallel
