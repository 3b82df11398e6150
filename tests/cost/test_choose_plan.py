"""degree=auto across strategies: ``choose_plan`` takes the strategy and degree predicted fastest that fit,
among those the caller's model family can run."""

from __future__ import annotations

import pytest

from parallel.cost.choose import choose_plan, rank_degrees, rank_sequence, ring_degrees
from parallel.cost.predict import cached_profile


def test_a_tiny_image_stays_on_one_worker():
    """FLUX.1-dev at 256x256 on H100s is bound by its ~4300 eagerly dispatched ops (20 us each on the host),
    which neither bands nor sequence parallelism shorten; at 2048x2048 the same GPUs are all worth taking."""
    tiny = choose_plan("flux.1-dev", 256, 256, 8, ("patch", "sequence"), "h100", "nvlink4")
    assert (tiny.strategy, tiny.degree) == ("none", 1) and tiny.job_strategy == "none"
    large = choose_plan("flux.1-dev", 2048, 2048, 8, ("patch", "sequence"), "h100", "nvlink4")
    assert large.degree == 8


@pytest.mark.parametrize(
    "size, link, winner", [(1024, "nvlink3", "sequence"), (4096, "ethernet-100g", "patch")]
)
def test_large_flux_images_on_8_a100s_take_the_fastest_prediction(size, link, winner):
    """At 1024x1024 over NVLink every band computes all 512 T5 tokens (22% of the step each, against 12.5%
    when sequence parallelism splits them), and Ulysses' blocking all-to-alls cost 2% of its step: sequence
    wins by 17%. At 4096x4096 over 100 GbE the text is 1% of the work, and Ulysses' all-to-alls (0.9 s a
    step) block while the bands' K/V go behind the compute (displaced): bands win by 13%."""
    prof = cached_profile("flux.1-dev", size, size, 1, None, "float16")
    plan = choose_plan("flux.1-dev", size, size, 8, ("patch", "sequence"), "a100-80gb", link)
    assert (plan.strategy, plan.degree) == (winner, 8), plan
    ranked = rank_degrees(prof, 8, "a100-80gb", link) + rank_sequence(prof, 8, "a100-80gb", link)
    assert plan.prediction.mean_step_s == min(p.mean_step_s for p in ranked if p.fits)
    only_bands = choose_plan("flux.1-dev", size, size, 8, ("patch",), "a100-80gb", link)
    assert only_bands.strategy == "patch"  # a family without a sequence plan is never given one


def test_sequence_needs_tokens_that_split_and_heads_for_ulysses():
    """Ulysses' share of the workers must divide the heads (Flux: 24); the image's and the text's tokens
    must split evenly (SD3's 77 + 256 = 333 text tokens never do)."""
    flux = cached_profile("flux.1-dev", 1024, 1024, 1, None, "float16")
    assert ring_degrees(flux, 8) == [1, 2, 4, 8]
    assert ring_degrees(flux, 16) == [2, 4, 8, 16]  # 16 does not divide 24 heads: a ring of at least 2
    sd3 = cached_profile("sd3.5-large", 1024, 1024, 1, None, "float16")
    assert ring_degrees(sd3, 8) == [] and ring_degrees(sd3, 2) == []
    plan = choose_plan("sd3.5-large", 1024, 1024, 8, ("patch", "sequence"), "a100-80gb", "nvlink3")
    assert plan.strategy == "patch"


def test_guidance_branches_split_when_offered():
    """Qwen-Image runs CFG batched: offered the CFG variants, the plan splits the branches over two halves
    (``cfg``) and says which job strategy and Ring degree run it."""
    plan = choose_plan("qwen-image", 1024, 1024, 8, ("patch", "cfg", "sequence", "sequence-cfg"), "a100-80gb", "nvlink3")
    assert plan.cfg and plan.degree == 8
    assert plan.job_strategy == {"cfg": "patch", "sequence-cfg": "sequence"}[plan.strategy]
    assert plan.prediction.traffic.bytes_per_step["cfg"] > 0
    flux = cached_profile("flux.1-dev", 1024, 1024, 1, None, "float16")
    assert rank_sequence(flux, 8, "a100-80gb", "nvlink3", "sequence-cfg") == []  # batch 1: no branches to split


def test_unknown_strategies_and_no_workers_are_refused():
    with pytest.raises(ValueError, match="strategies"):
        choose_plan("flux.1-dev", 1024, 1024, 8, ("tensor",))
    with pytest.raises(ValueError, match="free_workers"):
        choose_plan("flux.1-dev", 1024, 1024, 0, ("patch",))
