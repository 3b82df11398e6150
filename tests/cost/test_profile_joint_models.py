"""The joint-attention transformers (FLUX.1-dev, SD3.5, Qwen-Image) build from their published configs on the
meta device, take their inputs as their pipelines pass them, and profile at 1024x1024."""

from __future__ import annotations

import pytest

from parallel.cost.models import get_model_spec
from parallel.cost.predict import cached_profile

PUBLISHED = [
    # name, published parameters, tolerance: FLUX.1 "12B"; SD3.5 Large "8.1B"; Qwen-Image "20B" (a round
    # figure); SD3.5 Medium "2.5B", whose MMDiT-X transformer alone builds to 2.24B
    ("flux.1-dev", 12e9, 0.02),
    ("sd3.5-large", 8.1e9, 0.02),
    ("qwen-image", 20e9, 0.05),
    ("sd3.5-medium", 2.5e9, 0.12),
]


@pytest.fixture(scope="module")
def profiles():
    return {name: cached_profile(name, 1024, 1024, 1, None, "bfloat16") for name, _, _ in PUBLISHED}


@pytest.mark.parametrize("name, published, tolerance", PUBLISHED)
def test_parameter_counts_match_the_published_models(profiles, name, published, tolerance):
    p = profiles[name]
    params = p.param_bytes / p.dtype_bytes
    assert abs(params - published) / published < tolerance, params


def test_tokens_text_and_bands_at_1024(profiles):
    """4096 image tokens (128 latent rows in 2x2 tokens) beside each pipeline's text: T5's 512 for Flux,
    CLIP's 77 and T5's 256 for SD3, Qwen's prompt; bands of whole token rows."""
    texts = {"flux.1-dev": 512, "sd3.5-large": 333, "sd3.5-medium": 333, "qwen-image": 256}
    for name, text in texts.items():
        p = profiles[name]
        assert (p.tokens, p.text_tokens, p.latent_rows, p.row_align) == (4096, text, 128, 2), name
        assert p.image_flops + p.text_flops + p.shared_flops == p.flops
        assert 0 < p.text_flops < p.image_flops
    assert profiles["flux.1-dev"].batch == 1 and profiles["sd3.5-large"].batch == 2  # distilled guidance vs CFG


def test_every_block_attends_jointly_and_medium_adds_its_dual_attention(profiles):
    """One joint attention per block over image and text (Flux: 19 double- + 38 single-stream blocks), whose
    exchanged K/V are the image's; SD3.5-medium's first 13 blocks add an image-only attention."""
    counts = {"flux.1-dev": 57, "sd3.5-large": 38, "qwen-image": 60}
    for name, blocks in counts.items():
        p = profiles[name]
        assert p.blocks == blocks and len(p.patch.kv_bytes) == blocks
        assert p.attention.tokens == [4096 + p.text_tokens] * blocks
    medium = profiles["sd3.5-medium"]
    assert sorted(set(medium.attention.tokens)) == [4096, 4096 + 333]
    assert len(medium.patch.kv_bytes) == 24 + 13


def test_flux_at_batch_two_is_twice_batch_one(profiles):
    one = profiles["flux.1-dev"]  # the module's profile (batch 1, distilled guidance): one more to build, not two
    two = cached_profile("flux.1-dev", 1024, 1024, 1, 2, "bfloat16")
    assert one.batch == 1 and two.flops == 2 * one.flops
    assert get_model_spec("flux.1-dev").image_tokens(1024, 1024) == one.tokens == 4096
