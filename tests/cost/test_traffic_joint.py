"""Patch bands on a joint-attention transformer (a tiny FLUX.1): the formula counts the image tokens' K/V (or
attention inputs) of every double- and single-stream block, never the text, and equals the bytes the real
bands count (``PatchHandle.bytes_sent``) at 2 and 3 workers, for both K/V sources and float16 stale values."""

from __future__ import annotations

import _cost_workers as CW
import _flux_workers as F
import pytest
from _cost_common import measured, run, tiny_flux_spec

from parallel.cost.predict import compute_share
from parallel.cost.profile import profile_model
from parallel.cost.traffic import patch_traffic, patch_traffic_per_rank

CASES = (("sync_kv", "kv", 1.0), ("sync_input", "input", 1.0), ("displaced_input_f16", "input", 0.5))
"""(FLUX_CONFIGS entry, kv_source, bytes per element sent over the profile's float32)."""


def flux_profile(text_tokens: int = F.TEXT_TOKENS):
    return profile_model(tiny_flux_spec(F.tiny_flux(), text_tokens, batch=F.SHAPE[0]), F.SHAPE[2], F.SHAPE[3])


@pytest.mark.parametrize("world", [2, 3])
def test_flux_band_bytes_match_the_counters(world):
    results = run(CW.flux_band_bytes, world)
    prof = flux_profile()
    bounds = results[0]["bounds"]
    for label, source, narrow in CASES:
        expected = patch_traffic_per_rank(prof, bounds, source)
        for rank, r in enumerate(results):
            assert measured(r[label], "kv") == pytest.approx(expected[rank]["kv"] * narrow), (label, rank)
            assert measured(r[label], "halo") == measured(r[label], "norm") == 0
    mean = patch_traffic(prof, world, "displaced", kv_source="input", stale_dtype="float16")
    counted = sum(measured(r["displaced_input_f16"], "kv") for r in results) / world
    assert mean.bytes_per_step["kv"] == pytest.approx(counted)


def test_the_text_is_computed_whole_and_never_sent():
    """Per block, the image's K and V (every band's 2x2 tokens, batch 2, float32) whatever the text's length;
    a longer text makes every band compute more, not send more."""
    short, long = flux_profile(6), flux_profile(60)
    model = F.tiny_flux()
    blocks = model.config.num_layers + model.config.num_single_layers
    tokens = (F.SHAPE[2] // 2) * (F.SHAPE[3] // 2)
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    assert short.patch.kv_bytes == [F.SHAPE[0] * tokens * 2 * inner * 4] * blocks
    assert long.patch.kv_bytes == short.patch.kv_bytes
    assert short.text_tokens == 6 and short.tokens == tokens and short.latent_rows == F.SHAPE[2]
    assert long.text_flops > short.text_flops > 0
    # two bands each run half the image and all of the text; sequence parallelism halves both
    assert compute_share(long, "patch", 2) > compute_share(short, "patch", 2) > 0.5
    for prof in (short, long):
        assert compute_share(prof, "sequence", 2) == pytest.approx(0.5 + prof.shared_flops / prof.flops / 2)
