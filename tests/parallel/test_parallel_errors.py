"""Bad input is refused with a ValueError naming the field."""

import pytest


def test_odd_world_refused_for_cfg(patch_run):
    for r in patch_run(3):
        msg = r["errors"]["cfg_odd"]
        assert msg.startswith("ValueError") and "degree=3" in msg and "even" in msg, msg


def test_odd_world_refused_for_cfg_single_worker(patch_run):
    msg = patch_run(1)[0]["errors"]["cfg_odd"]
    assert msg.startswith("ValueError") and "degree=1" in msg, msg


@pytest.mark.parametrize("world", [2, 3])
def test_band_shorter_than_alignment_refused(patch_run, world):
    for r in patch_run(world):
        msg = r["errors"]["short_band"]
        assert (
            msg.startswith("ValueError") and "minimum band height is 2" in msg and f"degree={world}" in msg
        ), msg


def test_square_only_dit_refused():
    from diffusers import DiTTransformer2DModel

    from pipelines.families.pixart.patch import parallelize_dit_patch

    model = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=1, sample_size=8, patch_size=2
    )
    with pytest.raises(NotImplementedError, match="square"):
        parallelize_dit_patch(model, None)


def test_wan_refuses_exchanging_attention_inputs():
    """Wan's keys carry their band's rotary positions, so its bands must exchange K/V, and say so."""
    from _wan_workers import tiny_wan

    from parallel.patch.config import PatchConfig
    from pipelines.families.wan.patch import parallelize_wan_patch

    with pytest.raises(NotImplementedError, match=r"kv_source='input'.*rotary"):
        parallelize_wan_patch(tiny_wan(), None, PatchConfig("displaced", kv_source="input"))
