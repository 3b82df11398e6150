"""A tiny Stable Diffusion XL pipeline (two CLIP text encoders over the built-in character vocabulary, a UNet
with pooled-text and time-id conditioning, a small VAE), built with diffusers' and transformers' own classes
and saved in diffusers format with safetensors: SDXL's layout to render offline in tests."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import nonzero


def save_tiny_sdxl(path: Path, seed: int = 0, refiner: bool = False, time_cond_proj_dim: int | None = None) -> Path:
    """The base pipeline, or with ``refiner`` an SDXL refiner (StableDiffusionXLImg2ImgPipeline: the second text
    encoder only, aesthetic-score time ids) sharing the base's VAE (the same seed builds the same VAE);
    ``time_cond_proj_dim``: an LCM-distilled UNet's guidance embedding width."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pipelines.builtin.image import build_tokenizer, scheduler_config

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    width, pooled, time_dim = 32, 32, 8

    def text_config(**extra) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
            **extra,
        )

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    vae = nonzero(vae, seed + 1)  # first: a refiner built with the same seed shares it
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=width if refiner else 2 * width,  # the encoders' hidden states, concatenated
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=pooled + (5 if refiner else 6) * time_dim,  # + aesthetic score
        time_cond_proj_dim=time_cond_proj_dim,
    )
    text_encoder_2 = CLIPTextModelWithProjection(text_config(projection_dim=pooled)).eval()
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config())
    torch.manual_seed(seed + 3)
    unet = nonzero(unet, seed + (4 if refiner else 2))
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(
            vae=vae,
            text_encoder=None,
            text_encoder_2=text_encoder_2,
            tokenizer=None,
            tokenizer_2=build_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config()).eval(),
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=build_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
        )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
