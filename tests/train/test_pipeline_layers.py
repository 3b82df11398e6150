"""The UNet as a pipeline layer list: same output as the UNet, and every carried tensor gets a gradient."""

from __future__ import annotations

import itertools

import pytest
import torch

from parallel.training.layers import run_layers
from parallel.training.partition import balanced_boundaries, profile_layer_costs
from pipelines.builtin.image import build_image_pipeline
from pipelines.families.sd.training import unet_layers


@pytest.fixture(scope="module")
def pipe():
    return build_image_pipeline(seed=5)


def _inputs(pipe, batch: int = 2, side: int = 8):
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn((batch, 4, side, side), generator=gen)
    timesteps = torch.randint(1000, (batch,), generator=gen)
    ids = torch.randint(pipe.text_encoder.config.vocab_size, (batch, 77), generator=gen)
    return latent, timesteps, ids


def test_layers_equal_text_encoder_then_unet(pipe):
    latent, timesteps, ids = _inputs(pipe)
    with torch.no_grad():
        embeds = pipe.text_encoder(ids)[0]
        expected = pipe.unet(latent, timesteps, encoder_hidden_states=embeds).sample
        got = run_layers(unet_layers(pipe.unet, pipe.text_encoder), (latent, timesteps, ids))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_every_float_tensor_crossing_any_cut_gets_a_gradient(pipe):
    layers = unet_layers(pipe.unet, pipe.text_encoder)
    inputs = _inputs(pipe)
    for cut in range(1, len(layers)):
        with torch.no_grad():
            carried = run_layers(layers[:cut], inputs)
        received = tuple(t.clone().requires_grad_(t.is_floating_point()) for t in carried)
        run_layers(layers[cut:], received).square().mean().backward()
        for index, tensor in enumerate(received):
            if tensor.is_floating_point():
                assert tensor.grad is not None, f"cut {cut}: carried tensor {index} gets no gradient"
        pipe.unet.zero_grad(set_to_none=True)
        pipe.text_encoder.zero_grad(set_to_none=True)


def test_balanced_boundaries_minimise_the_largest_stage():
    costs = [5.0, 1.0, 1.0, 1.0, 4.0, 2.0, 2.0]
    for stages in (1, 2, 3, 4):
        bounds = balanced_boundaries(costs, stages)
        assert bounds[0] == 0 and bounds[-1] == len(costs) and len(bounds) == stages + 1
        got = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        best = min(
            max(sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, len(costs))))
            for cuts in itertools.combinations(range(1, len(costs)), stages - 1)
        )
        assert got == pytest.approx(best)
    with pytest.raises(ValueError):
        balanced_boundaries(costs, 8)


def test_profiler_measures_every_layer(pipe):
    layers = unet_layers(pipe.unet, pipe.text_encoder)
    costs = profile_layer_costs(layers, _inputs(pipe), repeats=1)
    assert len(costs) == len(layers) and all(c > 0 for c in costs)
    assert all(p.grad is None for p in pipe.unet.parameters())
