"""Published architectures build from their config dicts on the meta device and profile at any size."""

import pytest

from parallel.cost.predict import cached_profile
from parallel.cost.profile import profile_model


@pytest.mark.parametrize(
    "name, published_params",
    [("sdxl", 2.567e9), ("pixart-alpha", 0.611e9)],  # SDXL base UNet; PixArt-alpha XL/2 (paper: 0.6B)
)
def test_parameter_counts_match_the_published_models(name, published_params):
    p = cached_profile(name, 512, 512)  # parameters do not depend on the size
    params = p.param_bytes / p.dtype_bytes
    assert abs(params - published_params) / published_params < 0.02, params


def test_flops_grow_faster_than_pixels_with_attention():
    small, large = cached_profile("pixart-alpha", 512, 512), cached_profile("pixart-alpha", 1024, 1024)
    assert 4.0 < large.flops / small.flops < 16.0
    assert large.param_bytes == small.param_bytes
    assert large.patch.kv_bytes and sum(large.patch.kv_bytes) == pytest.approx(4 * sum(small.patch.kv_bytes))


def test_video_tokens_follow_the_latent_frames():
    p = profile_model("wan2.1-1.3b", 480, 832, frames=81)
    assert p.tokens == 21 * (480 // 16) * (832 // 16)
    assert p.blocks == 30 and p.hidden_bytes_per_token == 1536 * 2


def test_batch_two_is_twice_batch_one():
    one, two = profile_model("pixart-alpha", 512, 512, batch=1), cached_profile("pixart-alpha", 512, 512)
    assert two.flops == 2 * one.flops
