"""Profiles on the meta device agree with FLOPs, parameter and activation bytes counted by hand."""

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from parallel.cost.profile import profile_module


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def test_linear():
    with torch.device("meta"):
        layer = nn.Linear(64, 48)
    p = profile_module(layer, (meta(5, 64),), {})
    assert p.flops == 2 * 5 * 64 * 48
    assert p.param_bytes == (64 * 48 + 48) * 4
    assert p.layers[0].activation_bytes == 5 * 48 * 4


def test_conv2d_strided():
    with torch.device("meta"):
        conv = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
    p = profile_module(conv, (meta(2, 8, 20, 12),), {})
    out_h, out_w = 10, 6
    assert p.flops == 2 * 2 * 16 * out_h * out_w * 8 * 3 * 3
    assert p.layers[0].activation_bytes == 2 * 16 * out_h * out_w * 4
    assert p.param_bytes == (16 * 8 * 9 + 16) * 4


def test_self_attention_block():
    b, n, d, heads = 2, 40, 32, 4
    with torch.device("meta"):
        attn = Attention(query_dim=d, heads=heads, dim_head=d // heads)
    p = profile_module(attn, (meta(b, n, d),), {})
    projections = 4 * 2 * b * n * d * d  # q, k, v, out
    scores_and_mix = 2 * (2 * b * n * n * d)  # Q K^T and P V over all heads
    assert p.flops == projections + scores_and_mix
    # per layer: four projections, and the scores and mixing as the Attention module's own ops
    own = {layer.name: layer.flops for layer in p.layers}
    assert own["to_q"] == own["to_k"] == own["to_v"] == 2 * b * n * d * d
    assert own["Attention"] == scores_and_mix
    assert sum(own.values()) == p.flops


def test_layers_add_up_to_the_whole_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, norm_num_groups=8,
            layers_per_block=1, attention_head_dim=8, sample_size=16,
        )
    p = profile_module(unet, (meta(2, 4, 16, 16), torch.tensor(10)), {"encoder_hidden_states": meta(2, 5, 16)})
    assert p.flops > 0 and sum(layer.flops for layer in p.layers) == p.flops
    assert any(layer.kind == "Attention" and layer.flops > 0 for layer in p.layers)
    assert sum(layer.param_bytes for layer in p.layers) <= p.param_bytes


def test_peak_activation_of_a_chain():
    """Sequential keeps one layer's input alive while it computes the next output."""
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(16, 256), nn.GELU(), nn.Linear(256, 8))
    p = profile_module(net, (meta(4, 16),), {})
    inp, hidden, out = 4 * 16 * 4, 4 * 256 * 4, 4 * 8 * 4
    assert p.activation_peak_bytes == inp + max(2 * hidden, hidden + out)


def test_attention_scores_do_not_count_toward_the_peak():
    """A fused attention kernel never holds the (n x n) scores: the peak grows like n, not n^2."""
    peaks = []
    for n in (256, 1024):
        with torch.device("meta"):
            attn = Attention(query_dim=32, heads=4, dim_head=8)
        peaks.append(profile_module(attn, (meta(1, n, 32),), {}).activation_peak_bytes)
    assert peaks[1] <= 4 * peaks[0] * 1.01
