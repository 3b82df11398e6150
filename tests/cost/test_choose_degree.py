"""degree=auto: more workers for a larger image, fewer for a tiny one, never more than fit or exist."""

from __future__ import annotations

import pytest

from parallel.cost.choose import candidate_degrees, choose_degree
from parallel.cost.predict import cached_profile


def test_larger_images_get_more_workers_on_cpu():
    tiny = choose_degree("builtin-image", 64, 64, free_workers=8)
    large = choose_degree("builtin-image", 1024, 1024, free_workers=8)
    assert 1 <= tiny < large <= 8


def test_larger_images_get_more_gpus():
    small = choose_degree("pixart-alpha", 256, 256, free_workers=16, device="a100-80gb", link="nvlink3")
    large = choose_degree("pixart-alpha", 1024, 1024, free_workers=16, device="a100-80gb", link="nvlink3")
    assert small < large


def test_a_slow_link_keeps_a_large_job_on_fewer_workers():
    fast = choose_degree("pixart-alpha", 1024, 1024, 16, device="a100-80gb", link="nvlink3")
    slow = choose_degree("pixart-alpha", 1024, 1024, 16, device="a100-80gb", link="ethernet-10g")
    assert slow < fast


def test_never_more_than_the_free_workers_or_the_bands_the_latent_allows():
    assert choose_degree("builtin-image", 1024, 1024, free_workers=1) == 1
    assert choose_degree("builtin-image", 1024, 1024, free_workers=3) <= 3
    prof = cached_profile("builtin-image", 64, 64, 1, 2, "float32")  # 8 latent rows, bands of 4: at most 2
    assert candidate_degrees(prof, 8) == [1, 2]
    with pytest.raises(ValueError, match="free_workers"):
        choose_degree("builtin-image", 64, 64, free_workers=0)


def test_memory_forces_more_workers_when_one_does_not_fit(tmp_path):
    """On a device too small for one worker's share, the degree grows until the share fits."""
    prof = cached_profile("builtin-image", 1024, 1024, 1, 2, "float32")
    one_worker = prof.param_bytes + prof.activation_peak_bytes
    small = tmp_path / "small.yaml"
    small.write_text(
        f"devices:\n  tiny-cpu: {{peak_flops: 1.0e12, efficiency: 1.0, memory_bytes: {one_worker * 0.6:.0f}.0, "
        "op_overhead_s: 1.0e-3, dtype: float32}\n"
    )
    generous = tmp_path / "big.yaml"
    generous.write_text(small.read_text().replace(f"{one_worker * 0.6:.0f}", f"{one_worker * 10:.0f}"))
    roomy = choose_degree(prof, 0, 0, 8, device="tiny-cpu", link="loopback", mode="sync", specs_yaml=str(generous))
    tight = choose_degree(prof, 0, 0, 8, device="tiny-cpu", link="loopback", mode="sync", specs_yaml=str(small))
    assert roomy == 1  # dispatch-bound: splitting does not pay
    assert tight >= 2


def test_longer_videos_get_more_pipeline_stages():
    """Video models are split into frame-pipeline stages: a 9-frame clip is one frame block (one worker);
    1,025 frames are 33 blocks, enough to keep 8 stages busy."""
    short = choose_degree("wan2.1-1.3b", 320, 512, 8, device="h100", link="nvlink4", frames=9)
    long = choose_degree("wan2.1-1.3b", 320, 512, 8, device="h100", link="nvlink4", frames=1025)
    assert short == 1 and long == 8
