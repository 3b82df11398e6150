"""CFG parallel (2 branches x N bands) equals batched CFG on one device."""

import pytest
import torch
from _parallel_models import stitch

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("model", ["unet", "pixart"])
def test_cfg_parallel_loop_matches_one_device(cfg_run, reference, world, model):
    results = cfg_run(world)
    n = world // 2
    ref = reference(model)["loop_cfg"]
    cond, uncond = results[:n], results[n:]
    assert all(r["branch"] == "cond" for r in cond) and all(r["branch"] == "uncond" for r in uncond)
    torch.testing.assert_close(stitch(cond, model, "loop_cfg"), ref, **TOL)
    torch.testing.assert_close(stitch(cond, model, "loop_cfg_displaced_warm"), ref, **TOL)
    # partners hold bitwise identical guided latents
    torch.testing.assert_close(
        stitch(uncond, model, "loop_cfg"), stitch(cond, model, "loop_cfg"), atol=0, rtol=0
    )


@pytest.mark.parametrize("world", [2, 4])
def test_partners_and_traffic(cfg_run, world):
    results = cfg_run(world)
    n = world // 2
    for rank, r in enumerate(results):
        assert r["partner"] == (rank + n) % world
        assert r["patch_rank"] == rank % n
        # noise predictions go to the partner only
        assert set(r["cfg_bytes"].total["cfg"]) == {r["partner"]}
        # patch traffic stays inside the branch (global ranks of the same half)
        peers = set(r["unet"]["patch_bytes"].per_peer())
        half = set(range(0, n)) if rank < n else set(range(n, world))
        assert peers <= half - {rank}
        assert bool(peers) == (n > 1)
