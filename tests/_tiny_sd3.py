"""A tiny Stable Diffusion 3.5 pipeline, built with diffusers' and transformers' own classes and saved in diffusers
format with safetensors: SD3's layout to render offline in tests.

An ``SD3Transformer2DModel`` of 2 joint blocks (the first a dual-attention block, RMS qk-norm: SD3.5's layout),
two ``CLIPTextModelWithProjection`` over the built-in character vocabulary, a T5 encoder over a small word
vocabulary, a small VAE with SD3's shift and scaling factors, and ``FlowMatchEulerDiscreteScheduler`` with
SD3's shift of 3.0.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import _tokenizer as t5_tokenizer
from _tiny_pixart import nonzero

CLIP_WIDTH = 16
"""Hidden width of each CLIP encoder (their concatenation, 32, is padded to T5's width by ``encode_prompt``)."""
T5_WIDTH = 32
"""T5's width: the transformer's ``joint_attention_dim``."""


def tiny_sd3_transformer(seed: int = 0, **overrides):
    """The tiny SD3.5-layout transformer (random weights, none left at zero), in eval mode."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    config = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=16,
        pooled_projection_dim=2 * CLIP_WIDTH,
        out_channels=4,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    return nonzero(SD3Transformer2DModel(**{**config, **overrides}), seed + 1)


def save_tiny_sd3(path: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from pipelines.builtin.image import build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()

    def clip() -> CLIPTextModelWithProjection:
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=CLIP_WIDTH,
            intermediate_size=2 * CLIP_WIDTH,
            projection_dim=CLIP_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
        return CLIPTextModelWithProjection(config).eval()

    t5 = t5_tokenizer()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=1.5305,  # SD3's
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed + 2),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=nonzero(vae, seed + 1),
        text_encoder=clip(),
        tokenizer=tokenizer,
        text_encoder_2=clip(),
        tokenizer_2=build_tokenizer(),
        text_encoder_3=T5EncoderModel(
            T5Config(vocab_size=len(t5), d_model=T5_WIDTH, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
        ).eval(),
        tokenizer_3=t5,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
