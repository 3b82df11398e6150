"""Patch and CFG parallel renders through real Ray workers and gloo groups, against one worker."""

import pytest
import torch

from cluster.jobs.image import ParallelSpec, RenderSpec
from runtime.jobs.image import run_render
from runtime.pool import DevicePool, PoolConfig

STEPS = 4


@pytest.fixture(scope="module")
def pool4(ray_local):
    pool = DevicePool(PoolConfig(workers=4, device="cpu", group_timeout_s=60))
    yield pool
    pool.shutdown()


def _spec(model_dir, **parallel) -> RenderSpec:
    # 104 px = 13 latent rows: uneven bands (4, 4, 5) at degree 3
    spec = RenderSpec(
        model=str(model_dir),
        prompt="checkers",
        height=104,
        width=64,
        steps=STEPS,
        seed=5,
        guidance_scale=4.0,
        parallel=ParallelSpec(**parallel),
    )
    spec.validate()
    return spec


@pytest.fixture(scope="module")
def single(pool4, builtin_image_dir):
    return run_render(pool4, _spec(builtin_image_dir), progress=False, decode=False)


@pytest.mark.parametrize(
    "degree,cfg",
    [(2, False), (3, False), (2, True), (4, True)],
    ids=["2-bands", "3-uneven-bands", "cfg-1x2", "cfg-2x2"],
)
def test_sync_equals_single_worker(pool4, builtin_image_dir, single, degree, cfg):
    spec = _spec(builtin_image_dir, strategy="patch", degree=degree, mode="sync", cfg=cfg)
    result = run_render(pool4, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, single.latents, atol=1e-4, rtol=1e-4)
    workers = result.metadata["workers"]
    assert len(workers) == degree
    assert sorted({w["band"] for w in workers}) == list(range(degree // 2 if cfg else degree))
    assert all(w["bytes_sent_per_step"] > 0 for w in workers)
    if cfg:
        assert {w["branch"] for w in workers} == {"cond", "uncond"}


def test_displaced_with_full_warmup_equals_sync(pool4, builtin_image_dir, single):
    spec = _spec(builtin_image_dir, strategy="patch", degree=2, mode="displaced", warmup_steps=STEPS)
    result = run_render(pool4, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, single.latents, atol=1e-4, rtol=1e-4)


def test_displaced_is_stale_and_halos_go_to_neighbours(pool4, builtin_image_dir, single):
    spec = _spec(builtin_image_dir, strategy="patch", degree=3, mode="displaced", warmup_steps=1)
    result = run_render(pool4, spec, progress=False, decode=False)
    diff = (result.latents - single.latents).abs().max().item()
    assert diff > 1e-4, "displaced mode after warmup should use stale activations"
    assert torch.isfinite(result.latents).all()
    first = result.metadata["workers"][0]["bytes_sent_by_kind_and_peer"]
    assert set(first["halo"]) == {1}, first["halo"]  # band 0 talks halo to band 1 only
    assert set(first["kv"]) == {1, 2}  # K/V go to every band


def test_float16_stale_activations_through_the_pool(pool4, builtin_image_dir, single):
    """parallel.stale_dtype reaches the workers: displaced steps (3 of 4 after one warmup step) send their
    K/V in half the bytes, the result stays within rounding of the full-precision displaced render."""
    results = {}
    for dtype in (None, "float16"):
        spec = _spec(builtin_image_dir, strategy="patch", degree=2, mode="displaced", warmup_steps=1, stale_dtype=dtype)
        results[dtype] = run_render(pool4, spec, progress=False, decode=False)
    assert results["float16"].metadata["stale_dtype"] == "float16"
    assert results[None].metadata["stale_dtype"] is None
    full = results[None].metadata["workers"][0]["bytes_sent_by_kind_and_peer"]["kv"][1]
    half = results["float16"].metadata["workers"][0]["bytes_sent_by_kind_and_peer"]["kv"][1]
    assert half * 8 == full * 5  # (1 full + 3 half steps) / 4 full steps
    staleness = (results[None].latents - single.latents).abs().max().item()
    rounding = (results["float16"].latents - results[None].latents).abs().max().item()
    assert 0 < rounding < 0.1 * staleness


def test_attention_inputs_instead_of_kv_through_the_pool(pool4, builtin_image_dir, single):
    """parallel.kv_source=input reaches the workers: exact in sync mode, and the built-in model's self-attention
    is as wide as its input, so the K/V exchange carries half the bytes of K and V."""
    results = {}
    for source in ("kv", "input"):
        spec = _spec(builtin_image_dir, strategy="patch", degree=2, mode="sync", kv_source=source)
        results[source] = run_render(pool4, spec, progress=False, decode=False)
    torch.testing.assert_close(results["input"].latents, single.latents, atol=1e-4, rtol=1e-4)
    assert results["input"].metadata["kv_source"] == "input"
    kv = results["kv"].metadata["workers"][0]["bytes_sent_by_kind_and_peer"]["kv"][1]
    inputs = results["input"].metadata["workers"][0]["bytes_sent_by_kind_and_peer"]["kv"][1]
    assert inputs * 2 == kv


def test_patched_unet_is_restored_for_the_next_job(pool4, builtin_image_dir, single):
    run_render(
        pool4,
        _spec(builtin_image_dir, strategy="patch", degree=2, mode="displaced"),
        progress=False,
        decode=False,
    )
    again = run_render(pool4, _spec(builtin_image_dir), progress=False, decode=False)
    torch.testing.assert_close(again.latents, single.latents, atol=0, rtol=0)
