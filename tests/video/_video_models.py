"""Tiny video models for the frame-pipeline tests: seeded, float32, eval mode."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

LATENT = (4, 4, 4)
"""(channels, height, width) of one latent frame."""
TEXT_DIM = 16


def tiny_wan(seed: int = 0, layers: int = 3) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=LATENT[0],
        out_channels=LATENT[0],
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=layers,
        rope_max_seq_len=64,
    )
    return model.eval()


def tiny_text(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 5, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=3.0)
