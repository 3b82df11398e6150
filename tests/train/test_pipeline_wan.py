"""The video DiT as a pipeline layer list: same output as the model, and every carried float gets a gradient."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from parallel.training.layers import run_layers
from parallel.training.partition import profile_layer_costs
from pipelines.builtin.image import build_image_pipeline
from pipelines.families.wan.training import wan_layers


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(2)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=64,
        freq_dim=16,
        ffn_dim=32,
        num_layers=3,
        rope_max_seq_len=64,
    )
    text_encoder = build_image_pipeline(seed=4).text_encoder
    return model.eval(), text_encoder.eval()


def _inputs(text_encoder, batch: int = 2, frames: int = 3, height: int = 4, width: int = 6):
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn((batch, 4, frames, height, width), generator=gen)
    timesteps = torch.rand(batch, generator=gen) * 1000  # flow matching: float sigma * 1000
    ids = torch.randint(text_encoder.config.vocab_size, (batch, 77), generator=gen)
    return latent, timesteps, ids


def test_layers_equal_text_encoder_then_transformer(parts):
    model, text_encoder = parts
    latent, timesteps, ids = _inputs(text_encoder)
    with torch.no_grad():
        expected = model(latent, timesteps, text_encoder(ids)[0]).sample
        got = run_layers(wan_layers(model, text_encoder), (latent, timesteps, ids))
        # without a text encoder the first layer takes the embeddings themselves
        embeds = run_layers(wan_layers(model), (latent, timesteps, text_encoder(ids)[0]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-5)


def test_every_float_tensor_crossing_any_cut_gets_a_gradient(parts):
    model, text_encoder = parts
    layers = wan_layers(model, text_encoder)
    inputs = _inputs(text_encoder)
    for cut in range(1, len(layers)):
        with torch.no_grad():
            carried = run_layers(layers[:cut], inputs)
        assert not any(
            t.is_floating_point() and t.ndim == 1 and t.shape == inputs[1].shape for t in carried
        ), f"cut {cut}: the float timesteps cross a cut"
        received = tuple(t.clone().requires_grad_(t.is_floating_point()) for t in carried)
        run_layers(layers[cut:], received).square().mean().backward()
        for index, tensor in enumerate(received):
            if tensor.is_floating_point():
                assert tensor.grad is not None, f"cut {cut}: carried tensor {index} gets no gradient"
        model.zero_grad(set_to_none=True)
        text_encoder.zero_grad(set_to_none=True)


def test_every_parameter_is_in_exactly_one_layer(parts):
    model, text_encoder = parts
    layers = wan_layers(model, text_encoder)
    owned = [id(p) for layer in layers for p in layer.parameters()]
    assert len(owned) == len(set(owned))
    assert set(owned) == {id(p) for p in [*model.parameters(), *text_encoder.parameters()]}
    costs = profile_layer_costs(layers, _inputs(text_encoder), repeats=1)
    assert len(costs) == len(layers) and all(c > 0 for c in costs)


def test_refuses_a_model_that_is_not_a_wan_transformer(parts):
    _, text_encoder = parts
    with pytest.raises(TypeError, match="model"):
        wan_layers(text_encoder)


# Per-frame timesteps (dit.context_offset): one noise level per latent frame.


def _per_frame_inputs(text_encoder, batch: int = 2, frames: int = 3):
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn((batch, 4, frames, 4, 6), generator=gen)
    per_frame = torch.rand((batch, frames), generator=gen) * 1000
    ids = torch.randint(text_encoder.config.vocab_size, (batch, 77), generator=gen)
    return latent, per_frame, ids


def test_per_frame_timesteps_equal_diffusers_per_token_path(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _per_frame_inputs(text_encoder)
    per_token = per_frame.repeat_interleave((4 // 2) * (6 // 2), dim=1)  # 6 tokens per frame
    with torch.no_grad():
        expected = model(latent, per_token, text_encoder(ids)[0]).sample
        got = run_layers(wan_layers(model, text_encoder), (latent, per_frame, ids))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_equal_levels_per_frame_equal_one_level_per_clip(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _per_frame_inputs(text_encoder)
    level = per_frame[:, :1]
    layers = wan_layers(model, text_encoder)
    with torch.no_grad():
        uniform = run_layers(layers, (latent, level.expand(-1, 3).contiguous(), ids))
        per_clip = run_layers(layers, (latent, level[:, 0], ids))
        mixed = run_layers(layers, (latent, per_frame, ids))
    torch.testing.assert_close(uniform, per_clip, rtol=1e-5, atol=1e-5)
    assert (mixed - per_clip).abs().max() > 1e-3


def test_per_frame_timesteps_must_match_the_frames(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _per_frame_inputs(text_encoder)
    with pytest.raises(ValueError, match="timesteps"):
        run_layers(wan_layers(model, text_encoder), (latent, per_frame[:, :2], ids))
