"""The latent preview (``pipelines.preview``): a linear map of channels to RGB, stretched to its range."""

from __future__ import annotations

import torch

from pipelines.preview import default_factors, latent_rgb


def test_the_default_map_groups_channels_by_colour():
    matrix, bias = default_factors(16)
    assert matrix.shape == (16, 3) and torch.allclose(matrix.sum(0), torch.ones(3)) and not bias.any()
    assert matrix[0, 0] > 0 and matrix[1, 1] > 0 and matrix[2, 2] > 0 and matrix[3, 0] > 0


def test_a_latent_gradient_shows_as_a_colour_gradient():
    latent = torch.zeros(4, 6, 10)
    latent[0] = torch.linspace(-3, 3, 10)  # channel 0 (and 3) feed red: a left-to-right ramp
    rgb = latent_rgb(latent)
    assert rgb.shape == (6, 10, 3) and rgb.dtype.name == "uint8"
    red = rgb[0, :, 0].astype(int)
    assert (red[1:] >= red[:-1]).all() and red[0] < 20 and red[-1] > 235
    assert (rgb[..., 1] == rgb[0, 0, 1]).all()  # green's channels are flat
    factors = (torch.tensor([[0.0, 0.0, 1.0]] * 4), torch.zeros(3))  # a family's own map: channel 0 to blue
    assert (latent_rgb(latent, factors)[0, :, 2].astype(int) == red).all()


def test_a_video_latent_shows_its_middle_frame():
    latent = torch.zeros(4, 5, 2, 2)
    latent[0, 2, 0, 0] = 1.0  # only the middle frame has a bright pixel
    rgb = latent_rgb(latent)
    assert rgb.shape == (2, 2, 3) and rgb[0, 0, 0] == 255 and rgb[1, 1, 0] == 0
