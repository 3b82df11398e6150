"""Tiny diffusers CogVideoX pipelines (1.0 and 1.5 configs), built offline and saved with
``CogVideoXPipeline.save_pretrained``: full CogVideoX directories to render in tests.

- "1.0" (CogVideoX-2b's layout): sincos positional embeddings added at the patch embedding, no temporal patch
  (``patch_size_t=None``), a 2-D convolution patch embedding; "1.0-rotary" (CogVideoX-5b's): rotary positions
  on diffusers' linspace grid instead;
- "1.5" (CogVideoX1.5-5b's layout): ``patch_size_t=2`` (a linear patch embedding over 2 latent frames),
  rotary positional embeddings (``use_rotary_positional_embeddings=True``, ``use_learned_positional_embeddings``
  False, as the 1.5 text-to-video configs set them; diffusers refuses learned without rotary, and learned ones only
  work at the config's sample size; with the temporal patch diffusers runs neither sincos nor learned positions:
  its position table counts latent frames, not token frames), no patch bias.

T5 text encoder (the tiny Wan pipeline's in-memory word vocabulary and ``TEXT_TOKENS``, the 1.0 transformer's
``max_text_seq_length``), ``AutoencoderKLCogVideoX`` (4 frames per latent frame, 4x
spatially) and a CogVideoX DDIM or DPM scheduler, v-prediction with trailing timesteps as the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_wan_pipeline import TEXT_TOKENS, _nonzero, _tokenizer

Z_DIM = 4
"""Latent channels of the VAE (= the transformer's in/out channels)."""
VAE_FACTOR = 4
"""Pixels per latent row/column."""


def tiny_transformer(version: str, layers: int = 3, seed: int = 0, heads: int = 2):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    common = dict(
        num_attention_heads=heads,
        attention_head_dim=16,
        in_channels=Z_DIM,
        out_channels=Z_DIM,
        time_embed_dim=16,
        text_embed_dim=32,
        num_layers=layers,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=TEXT_TOKENS,
    )
    if version == "1.0":
        model = CogVideoXTransformer3DModel(**common)
    elif version == "1.0-rotary":  # CogVideoX-5b's layout: rotary positions (linspace grid), no temporal patch
        model = CogVideoXTransformer3DModel(**common, use_rotary_positional_embeddings=True)
    elif version == "1.5":
        model = CogVideoXTransformer3DModel(
            **common,
            patch_size_t=2,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False,
            patch_bias=False,
        )
    else:
        raise ValueError(version)
    return _nonzero(model, seed + 2)


def save_tiny_cogvideox(
    path: Path, version: str = "1.0", scheduler: str = "ddim", seed: int = 0, layers: int = 3, heads: int = 2
) -> Path:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXDPMScheduler,
        CogVideoXPipeline,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=Z_DIM,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        scaling_factor=0.7,
    )
    if scheduler == "plain-ddim":  # diffusers' own CogVideoX tests: a DDIMScheduler with its defaults
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler()
    else:
        kind = {"ddim": CogVideoXDDIMScheduler, "dpm": CogVideoXDPMScheduler}[scheduler]
        sampler = kind(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True)
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_nonzero(vae, seed + 1),
        transformer=tiny_transformer(version, layers, seed, heads),
        scheduler=sampler,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
