"""Displaced (DistriFusion) mode: equal to sync during warmup, stale-but-close after it."""

import pytest
import torch
from _parallel_models import psnr, stitch

TOL = {"atol": 1e-4, "rtol": 1e-4}
MODELS = ["unet", "pixart"]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_warmup_covering_all_steps_equals_sync(patch_run, reference, world, model):
    results = patch_run(world)
    torch.testing.assert_close(stitch(results, model, "loop_displaced_warm"), reference(model)["loop"], **TOL)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_only_warmup_steps_are_synchronous(patch_run, world, model):
    for r in patch_run(world):
        assert r[model]["displaced_syncs"] == [True, False, False, False]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_stale_input_identical_to_fresh_gives_the_exact_output(patch_run, reference, world, model):
    """Second forward on the same input: displaced uses last forward's values, which equal this
    forward's, so the output must be the exact one; this pins down that stale halos, K/V slots and
    GroupNorm corrections are wired to the right layers and ranks."""
    results = patch_run(world)
    assert not any(r[model]["forward_const_sync"] for r in results)
    torch.testing.assert_close(stitch(results, model, "forward_const"), reference(model)["forward"], **TOL)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_small_input_change_gives_small_stale_error(patch_run, reference, world, model):
    """Previous forward on x, this one on x + eps*d. The output is stale (not exact), closer to the
    exact output than simply reusing the previous output would be, and the error shrinks in
    proportion to eps (staleness is a first-order effect, nothing else is wrong)."""
    results = patch_run(world)
    ref = reference(model)
    errs = {}
    for key in ("forward_eps", "forward_eps_small"):
        got = stitch(results, model, key)
        err = (got - ref[key]).abs().mean().item()
        change = (ref[key] - ref["forward"]).abs().mean().item()
        errs[key] = err
        print(f"{model} world={world} {key}: mean abs err {err:.2e} vs output change {change:.2e}")
        assert err > 1e-7, "displaced output is exact: is staleness really used?"
        assert err < change
    assert 0.05 < errs["forward_eps_small"] / errs["forward_eps"] < 0.2


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_displaced_loop_is_stale_but_reproducible(patch_run, reference, world, model):
    results = patch_run(world)
    ref = reference(model)["loop"]
    got = stitch(results, model, "loop_displaced")
    diff = (got - ref).abs().max().item()
    print(f"{model} world={world}: displaced loop max abs diff {diff:.3e}, PSNR {psnr(got, ref):.1f} dB")
    assert diff > 1e-4  # staleness is real
    assert torch.isfinite(got).all()
    # after reset() the run starts synchronous again and repeats itself exactly
    torch.testing.assert_close(stitch(results, model, "loop_displaced_again"), got, atol=0, rtol=0)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_displaced_steps_free_sent_buffers_a_few_exchanges_later(patch_run, world, model):
    """Without release, every exchange of a displaced step would keep its send buffer (this band's own
    K/V of every attention layer) until the next step; with the default lag of 4, at most 4 do."""
    results = patch_run(world)
    for r in results:
        assert r[model]["displaced_sends_held"][0] == 0  # a synchronous step waits on everything
        assert all(0 < n <= 4 for n in r[model]["displaced_sends_held"][1:])
    torch.testing.assert_close(
        stitch(results, model, "loop_displaced_lag1"), stitch(results, model, "loop_displaced"), atol=0, rtol=0
    )


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_float16_stale_activations_halve_the_bytes_and_barely_move_the_result(patch_run, reference, world, model):
    results = patch_run(world)
    torch.testing.assert_close(stitch(results, model, "loop_displaced_f16_warm"), reference(model)["loop"], **TOL)
    full, f16 = stitch(results, model, "loop_displaced"), stitch(results, model, "loop_displaced_f16")
    rounding = (f16 - full).abs().max().item()
    staleness = (full - reference(model)["loop"]).abs().max().item()
    print(f"{model} world={world}: float16 rounding {rounding:.2e}, staleness {staleness:.2e}")
    assert 0 < rounding < 0.1 * staleness
    for r in results:
        full_bytes, half_bytes = r[model]["bytes_displaced_loop"], r[model]["bytes_displaced_f16_loop"]
        for kind in ("halo", "kv"):
            if full_bytes.last_step.get(kind):
                for peer, n in full_bytes.last_step[kind].items():
                    assert half_bytes.last_step[kind][peer] * 2 == n
        assert half_bytes.last_step.get("norm") == full_bytes.last_step.get("norm")


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_exchanging_attention_inputs_halves_the_kv_bytes_with_the_same_staleness(patch_run, world, model):
    """The tiny models' attention is as wide as its input, so K and V together are twice the input: sending
    the inputs and projecting them on arrival gives the stale K/V of ``kv_source="kv"`` for half the bytes."""
    results = patch_run(world)
    torch.testing.assert_close(stitch(results, model, "loop_displaced_inputs"), stitch(results, model, "loop_displaced"), **TOL)
    for r in results:
        kv, inputs = r[model]["bytes_displaced_loop"], r[model]["bytes_displaced_inputs_loop"]
        assert kv.last_step["kv"] and {p: 2 * n for p, n in inputs.last_step["kv"].items()} == kv.last_step["kv"]
        assert inputs.last_step.get("halo") == kv.last_step.get("halo")


@pytest.mark.parametrize("world", [2, 3])
def test_displaced_sends_the_same_bytes_per_step_as_sync(patch_run, world):
    for r in patch_run(world):
        for model in MODELS:
            sync, displaced = r[model]["bytes_sync_loop"], r[model]["bytes_displaced_loop"]
            for kind in ("halo", "kv", "norm"):
                assert sync.last_step.get(kind) == displaced.last_step.get(kind)
                if model == "unet" or kind == "kv":  # PixArt has no conv halo and no GroupNorm
                    assert displaced.last_step.get(kind)
