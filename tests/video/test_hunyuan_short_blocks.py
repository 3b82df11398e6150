"""HunyuanVideo on 2 stages with blocks of one latent frame and no decode context: the decode-cost probe's short
video fits one temporal tile, which the decoder holds to the video's end, so only its last call returned frames
and the probe took the minimum of nothing (``ValueError`` in every worker's set-up; the service retried it as a
dead worker). The probe now times the whole decode when only one call returns frames."""

import pytest
import torch
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _video_workers import check_two_stages_equal_one_worker


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan-short") / "tiny-hunyuanvideo"))


@pytest.mark.parametrize("decode_context", [0, 1])
def test_two_stages_of_one_latent_frame_blocks_equal_one_worker(hunyuan_dir, tmp_path, decode_context):
    fields = dict(
        prompt="red and blue stripes", height=32, width=32, frames=12, block_frames=4, context_frames=0, steps=2,
        seed=1, decode_context=decode_context,
    )
    check_two_stages_equal_one_worker(hunyuan_dir, str(tmp_path), fields, blocks=3)
