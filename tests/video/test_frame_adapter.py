"""The Wan model cut into stage pieces equals diffusers' own forward; a Wan dir loads from disk."""

from __future__ import annotations

import pytest
import torch
from _video_models import tiny_text, tiny_wan

from pipelines.families.wan.frames import WanFrameAdapter
from pipelines.loading import load_model


def _pieces(model, latent, t, text, context_frames):
    adapter = WanFrameAdapter(model, tuple(latent.shape[1:]), context_frames)
    try:
        cond = adapter.conditions(t, text)
        adapter.begin_block(0)
        hidden = adapter.embed(latent)
        for layer in range(adapter.num_layers):
            hidden = adapter.run_layer(layer, hidden, cond)
        return adapter.head(hidden, cond)
    finally:
        adapter.remove()


@pytest.mark.parametrize("context_frames", [0, 2])
@torch.no_grad()
def test_pieces_equal_model_forward(context_frames):
    torch.set_num_threads(1)
    model, text = tiny_wan(layers=3), tiny_text()
    latent = torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([640.0])
    expected = model(latent, t, text, return_dict=False)[0]
    # with context but no neighbour cached yet, only the (relative) RoPE offset differs
    got = _pieces(model, latent, t, text, context_frames)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # remove() restored diffusers' processor: the model still gives the same output
    torch.testing.assert_close(model(latent, t, text, return_dict=False)[0], expected)


@torch.no_grad()
def test_wan_transformer_from_local_directory(tmp_path):
    torch.set_num_threads(1)
    model = tiny_wan(seed=5, layers=2)
    model.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    loaded = load_model(tmp_path / "transformer")
    assert type(loaded).__name__ == "WanTransformer3DModel" and not loaded.training
    latent, t, text = torch.randn(1, 4, 2, 4, 4), torch.tensor([300.0]), tiny_text()
    torch.testing.assert_close(
        _pieces(loaded, latent, t, text, 1), model(latent, t, text, return_dict=False)[0]
    )


def test_refuses_other_models_and_bad_context():
    with pytest.raises(TypeError, match="model: the frame pipeline drives WanTransformer3DModel"):
        WanFrameAdapter(torch.nn.Linear(2, 2), (4, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="context_frames"):
        WanFrameAdapter(tiny_wan(layers=1), (4, 2, 4, 4), 3)


@torch.no_grad()
def test_bfloat16_model_takes_float32_text():
    """A bfloat16 transformer beside a float32 text encoder (how the built-in video model loads in
    bfloat16) failed on the GPU with "mat1 and mat2 must have the same dtype": the adapter casts."""
    torch.set_num_threads(1)
    model = tiny_wan(layers=2).to(torch.bfloat16)
    latent = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t, text = torch.tensor([500.0]), tiny_text()
    assert text.dtype == torch.float32
    got = _pieces(model, latent, t, text, 1)
    expected = model(latent.bfloat16(), t, text.bfloat16(), return_dict=False)[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)
