"""A tiny diffusers LTXPipeline (T5 text encoder with an in-memory word vocabulary, LTX-Video transformer,
LTX's 3-D VAE at its real compression: 8 frames and 32 pixels per latent, timestep-conditioned decoder,
flow-matching Euler sampler with LTX's resolution-dependent shift), saved with ``LTXPipeline.save_pretrained``:
a full diffusers LTX-Video directory to render offline in tests."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_wan_pipeline import TEXT_TOKENS, _nonzero, _tokenizer

__all__ = ["LATENT_CHANNELS", "TEXT_TOKENS", "save_tiny_ltx", "tiny_ltx_transformer"]

LATENT_CHANNELS = 8
"""Latent channels of the VAE (= the transformer's in/out channels)."""
TEXT_DIM = 32
"""T5's width (the transformer's caption_channels)."""


def tiny_ltx_transformer(seed: int = 0, layers: int = 4):
    """An ``LTXVideoTransformer3DModel`` of ``layers`` blocks, every weight non-zero, in eval mode."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    model = LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=12,
        cross_attention_dim=24,
        num_layers=layers,
        caption_channels=TEXT_DIM,
    )
    return _nonzero(model, seed + 2)


def save_tiny_ltx(path: Path, seed: int = 0, layers: int = 4, small_vae: bool = False) -> Path:
    """``small_vae``: the VAE diffusers' own LTX tests build: an encoder of two scaling blocks, no patching (4 frames
    and 4 pixels per latent: the pipeline scales the rotary embedding by them), and a decoder of three (it makes 8
    frames and 8 pixels of a latent: the pipeline returns what it makes)."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    vae = AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, not small_vae, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=True,
        patch_size=1 if small_vae else 4,
        patch_size_t=1,
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a latent space that is not already standard: normalisation must matter
        vae.latents_mean.copy_(torch.randn(LATENT_CHANNELS, generator=generator) * 0.2)
        vae.latents_std.copy_(torch.rand(LATENT_CHANNELS, generator=generator) + 0.5)
    # LTX-Video's own scheduler config (Lightricks/LTX-Video scheduler_config.json)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    pipe = LTXPipeline(
        scheduler=scheduler,
        vae=_nonzero(vae, seed + 3),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=tiny_ltx_transformer(seed, layers),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
