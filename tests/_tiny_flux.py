"""A tiny FLUX.1 pipeline (FluxTransformer2DModel with one double- and one single-stream block and distilled
guidance, CLIP over the built-in character vocabulary for the pooled text, T5 with a locally built tokenizer,
a small VAE with Flux's latent shift and scale, flow matching with Flux's resolution-dependent shift), built
with diffusers' and transformers' own classes and saved in diffusers format with safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import _tokenizer as t5_tokenizer
from _tiny_pixart import nonzero

SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
"""FLUX.1-dev's scheduler config: the shift grows with the image's token count (``calculate_shift``)."""


def tiny_flux_transformer(seed: int = 0, text_dim: int = 32, pooled_dim: int = 32, latent_channels: int = 4):
    """One double-stream and one single-stream block; packed 2x2 latents, so 4x the latent channels in."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        pooled_projection_dim=pooled_dim,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),  # add up to the head width, as Flux's (16, 56, 56) add up to 128
    )
    return nonzero(model, seed + 7)


def save_tiny_flux(path: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pipelines.builtin.image import build_tokenizer

    torch.manual_seed(seed)
    clip_tokenizer = build_tokenizer()
    t5 = t5_tokenizer()
    width = 32
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=clip_tokenizer.model_max_length,
            bos_token_id=len(clip_tokenizer) - 2,
            eos_token_id=len(clip_tokenizer) - 1,
            pad_token_id=len(clip_tokenizer) - 1,
        )
    ).eval()
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(t5), d_model=width, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.3611,  # FLUX.1's
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=nonzero(vae, seed + 1),
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5,
        transformer=tiny_flux_transformer(seed + 2, text_dim=width, pooled_dim=width),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
