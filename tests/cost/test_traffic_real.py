"""Traffic formulas agree with the bytes the real strategies count, in 2- and 3-worker gloo runs."""

from __future__ import annotations

import _cost_workers as CW
import pytest
from _cost_common import measured, run, tiny_profile

from parallel.cost.traffic import patch_traffic, patch_traffic_per_rank

KINDS = ("halo", "kv", "norm")


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["unet", "pixart"])
def test_patch_bytes_per_rank_match_the_counters(world, name):
    results = run(CW.patch_bytes, world)
    prof = tiny_profile(name)
    bounds = results[0][name]["bounds"]
    expected = {"kv": patch_traffic_per_rank(prof, bounds), "input": patch_traffic_per_rank(prof, bounds, "input")}
    for rank, r in enumerate(results):
        for mode, source in (("sync", "kv"), ("displaced", "kv"), ("displaced_inputs", "input")):
            for kind in KINDS:
                want = expected[source][rank][kind]
                assert measured(r[name][mode], kind) == pytest.approx(want), (rank, mode, kind)
    assert expected["input"][0]["kv"] == pytest.approx(expected["kv"][0]["kv"] / 2)
    if name == "unet":
        first = expected["kv"][0]
        assert first["halo"] > 0 and first["kv"] > 0 and first["norm"] > 0


@pytest.mark.parametrize("world", [2, 3])
def test_mean_patch_traffic_matches_on_even_bands(world):
    """The mean-per-worker formula (equal bands) equals the counters averaged over ranks (each band sends
    its own K/V, unpadded, so the mean over uneven bands is the even-band figure too)."""
    results = run(CW.patch_bytes, world)
    prof = tiny_profile("unet")
    traffic = patch_traffic(prof, world, "displaced")
    for kind in KINDS:
        mean = sum(measured(r["unet"]["displaced"], kind) for r in results) / world
        assert traffic.bytes_per_step[kind] == pytest.approx(mean)
    assert set(traffic.overlapped) == set(KINDS)
    assert patch_traffic(prof, world, "sync").overlapped == ()


@pytest.mark.parametrize("world", [2, 3])
def test_mean_patch_traffic_follows_kv_source_and_stale_dtype(world):
    """Displaced steps that send attention inputs in float16: the formula's halo and K/V bytes follow both
    options (a quarter of the float32 K/V here), the GroupNorm sums (float64) do not."""
    results = run(CW.patch_bytes, world)
    prof = tiny_profile("unet")
    traffic = patch_traffic(prof, world, "displaced", kv_source="input", stale_dtype="float16")
    for kind in KINDS:
        mean = sum(measured(r["unet"]["displaced_inputs_f16"], kind) for r in results) / world
        assert traffic.bytes_per_step[kind] == pytest.approx(mean)
    plain = patch_traffic(prof, world, "displaced")
    assert traffic.bytes_per_step["kv"] == pytest.approx(plain.bytes_per_step["kv"] / 4)
