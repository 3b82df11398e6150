"""CFG traffic formula agrees with the real CFG-parallel run: the partner swap and the patch traffic at
half the batch inside each branch (2 workers: 1 band per branch; 4 workers: 2 bands)."""

from __future__ import annotations

import _cost_workers as CW
import pytest
from _cost_common import measured, run, tiny_profile

from parallel.cost.traffic import cfg_traffic, patch_traffic_per_rank


@pytest.mark.parametrize("world", [2, 4])
def test_cfg_bytes_match_the_counters(world):
    results = run(CW.cfg_bytes, world)
    batched = tiny_profile("unet", batch=2)
    branch = tiny_profile("unet", batch=1)
    traffic = cfg_traffic(batched, world)
    bounds = results[0]["bounds"]
    per_rank = patch_traffic_per_rank(branch, bounds)
    for r in results:
        a, b = bounds[r["patch_rank"]]
        assert sum(r["cfg"].values()) == batched.latent_bytes / 2 * (b - a) / batched.latent_rows
        for kind in ("halo", "kv", "norm"):
            assert measured(r["patch"], kind) == pytest.approx(per_rank[r["patch_rank"]][kind])
    mean_cfg = sum(sum(r["cfg"].values()) for r in results) / world
    assert traffic.bytes_per_step["cfg"] == pytest.approx(mean_cfg)
    assert "cfg" not in traffic.overlapped
    if world == 4:
        assert traffic.bytes_per_step["halo"] > 0
