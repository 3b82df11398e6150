"""The built-in image model: a small latent diffusion model in Stable Diffusion's layout.

It has every module kind patch parallelism must handle (3x3 convolutions, stride-2 downsampling,
GroupNorm, self-attention, cross-attention on a text encoder) and is small enough to train and render
on a CPU. `build_image_pipeline` makes it with random weights, the starting point of `tessera train`,
whose `export=true` writes the trained pipeline to pipelines/builtin/builtin-image (TRAINING.md).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipelines.text_vocab import character_vocab

TEXT_WIDTH = 64
MAX_PROMPT_TOKENS = 77


def unet_config() -> dict:
    return dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        # SDXL's layout: no attention at full latent resolution, where its cost is quadratic in pixels
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
    )


def text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def scheduler_config() -> dict:
    """Stable Diffusion's training noise schedule."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(vocab=character_vocab(), merges=[], model_max_length=MAX_PROMPT_TOKENS)


def build_image_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The built-in image pipeline with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_config()),
        text_encoder=CLIPTextModel(text_config(len(tokenizer))),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_config()),
        scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval()
    return pipe
