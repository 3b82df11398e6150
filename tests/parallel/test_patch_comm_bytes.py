"""Byte counters: halos go to the two neighbours only; K/V and GroupNorm traffic is counted apart."""

import _parallel_models as M
import _parallel_workers as W
import pytest
import torch


def test_halo_bytes_go_to_neighbours_only(patch_run):
    results = patch_run(3)
    for rank, r in enumerate(results):
        halo = r["unet"]["bytes_sync_loop"].total["halo"]
        assert set(halo) == {p for p in (rank - 1, rank + 1) if 0 <= p < 3}, (rank, halo)
        assert all(n > 0 for n in halo.values())
    # rank 0 talks halo to rank 1 only, but all-gathers K/V and all-reduces statistics with everyone
    total0 = results[0]["unet"]["bytes_sync_loop"].total
    assert set(total0["kv"]) == {1, 2} and set(total0["norm"]) == {1, 2}


def test_halo_bytes_match_the_conv_geometry(patch_run):
    """Rank 0 (top band) sends rank 1 the last ``padding`` rows of every conv input with a row kernel
    > 1, i.e. per forward the sum over those convs of batch*channels*padding*width*4 bytes. The
    expectation is built from the single-device model's conv inputs, not from our code."""
    inputs = []
    model = M.tiny_unet(2)
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: inputs.append((mod.padding[0], args[0].shape)))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1
    ]
    _, shape, _ = W.MODELS["unet"]
    with torch.no_grad():
        M.model_call(model)(torch.zeros(shape), torch.tensor(10), M.text_embeddings(shape[0]))
    for h in hooks:
        h.remove()
    expected = sum(p * s[0] * s[1] * s[3] * 4 for p, s in inputs)

    b0 = patch_run(3)[0]["unet"]["bytes_sync_loop"]
    assert b0.last_step["halo"] == {1: expected}  # the loop's last forward
    # cumulative: one batch-2 forward, then 4 loop forwards of batch 1
    assert b0.total["halo"] == {1: (2 + W.STEPS) * expected}


@pytest.mark.parametrize("model", ["pixart"])
def test_dit_sends_no_halo(patch_run, model):
    for r in patch_run(3):
        assert "halo" not in r[model]["bytes_sync_loop"].total
        assert r[model]["bytes_sync_loop"].total["kv"]


def test_single_worker_sends_nothing(patch_run):
    r = patch_run(1)[0]
    for model in ("unet", "pixart"):
        assert r[model]["bytes_sync_loop"].per_peer(kinds=("halo", "kv", "norm")) == {}
