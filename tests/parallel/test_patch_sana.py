"""Row bands on diffusers' SanaTransformer2DModel equal one device (sync), over real gloo groups; its linear attention
sums a small per-head state over the bands instead of exchanging K/V, so its bytes do not grow with the image."""

from __future__ import annotations

import _sana_workers as W
import pytest
import torch
from _parallel_dist import run_ranks

from pipelines.families.sana.patch import parallelize_sana_patch

TOL = {"atol": 1e-4, "rtol": 1e-4}
_runs: dict[int, list] = {}
_refs: dict[str, dict[str, torch.Tensor]] = {}


def sana_run(world: int) -> list:
    if world not in _runs:
        _runs[world] = run_ranks(W.sana_scenarios, world, timeout=240)
    return _runs[world]


def ref(name: str) -> dict[str, torch.Tensor]:
    if name not in _refs:
        torch.set_num_threads(1)
        _refs[name] = W.reference(name)
    return _refs[name]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", list(W.MODELS))
@pytest.mark.parametrize("key", ["forward", "loop"])
def test_sync_equals_single_device(world, name, key):
    for r in sana_run(world):
        torch.testing.assert_close(r[name][key], ref(name)[key], **TOL)
    error = max((r[name][key] - ref(name)[key]).abs().max().item() for r in sana_run(world))
    print(f"{name} {key} world={world}: max abs error {error:.2e}")


def test_bands_are_uneven_runs_of_whole_patch_rows():
    assert sana_run(2)[0]["sana"]["bounds"] == [(0, 5), (5, 10)]
    assert sana_run(3)[0]["sana"]["bounds"] == [(0, 4), (4, 7), (7, 10)]
    assert sana_run(3)[0]["sana_pe"]["bounds"] == [(0, 6), (6, 10), (10, 14)]


@pytest.mark.parametrize("world", [2, 3])
def test_linear_attention_sends_each_peer_one_state_per_layer(world):
    """Per forward, each band sends each other band, per self-attention layer, the float32 state
    ``(batch, heads, head_dim + 1, head_dim)``, and no K/V at all."""
    model = W.tiny("sana")
    batch = W.MODELS["sana"][1][0]
    heads, head_dim = model.config.num_attention_heads, model.config.attention_head_dim
    expected = model.config.num_layers * batch * heads * (head_dim + 1) * head_dim * 4
    for rank, r in enumerate(sana_run(world)):
        sent = r["sana"]["bytes_forward"]
        assert sent["linear"] == {peer: expected for peer in range(world) if peer != rank}
        assert "kv" not in sent


@pytest.mark.parametrize("world", [2, 3])
def test_linear_attention_bytes_do_not_grow_with_the_image(world):
    for r in sana_run(world):
        small, large = r["sana"]["bytes_forward"], r["sana"]["bytes_larger"]
        assert large["linear"] == small["linear"]
        assert sum(large["halo"].values()) > sum(small["halo"].values())  # the feed-forward's halos do grow


def test_feed_forward_halos_go_to_neighbours_only():
    for rank, r in enumerate(sana_run(3)):
        assert set(r["sana"]["bytes_forward"]["halo"]) == {p for p in (rank - 1, rank + 1) if 0 <= p < 3}


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", list(W.MODELS))
def test_displaced_with_full_warmup_equals_sync(world, name):
    for r in sana_run(world):
        torch.testing.assert_close(r[name]["loop_displaced_warm"], ref(name)["loop"], **TOL)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", list(W.MODELS))
def test_displaced_stale_state_equal_to_fresh_gives_the_exact_output(world, name):
    """A displaced forward on the input of the synchronous forward before it: the other bands' stale states
    and halos equal the fresh ones, so the output must be the exact one (the wiring of the stale parts)."""
    results = sana_run(world)
    assert not any(r[name]["forward_const_sync"] for r in results)
    for r in results:
        torch.testing.assert_close(r[name]["forward_const"], ref(name)["forward"], **TOL)


def test_displaced_uses_the_previous_steps_states_after_warmup():
    r = sana_run(2)[0]["sana"]
    assert r["displaced_syncs"] == [True] + [False] * (W.STEPS - 1)
    error = (r["loop_displaced"] - ref("sana")["loop"]).abs().max().item()
    assert 1e-6 < error < 0.5, error  # stale by a step: close, not equal (else nothing was stale)


@pytest.mark.parametrize("name", list(W.MODELS))
def test_remove_restores_the_single_device_model(name):
    for r in sana_run(2):
        torch.testing.assert_close(r[name]["after_remove"], ref(name)["forward"], atol=1e-5, rtol=1e-5)


def test_band_not_made_of_whole_patches_is_refused():
    for r in sana_run(2):
        assert r["odd_band"].startswith("ValueError: band 0 of height=14"), r["odd_band"]
        assert "align=2" in r["odd_band"]


def test_a_model_other_than_sana_is_refused():
    with pytest.raises(TypeError, match="transformer: expected a SanaTransformer2DModel"):
        parallelize_sana_patch(torch.nn.Linear(2, 2), None)
