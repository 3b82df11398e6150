"""Tiny diffusers Wan 2.2 / image-to-video pipelines, built offline with diffusers' and transformers' own classes
and saved with ``save_pretrained``: Wan 2.1 I2V (CLIP image encoder, ``image_dim``/``added_kv_proj_dim``
transformer), Wan 2.2 I2V (two experts, no image encoder), Wan 2.2 T2V A14B (two experts) and TI2V-5B (its own
VAE: z_dim 8 here, a VAE patch of 2, 16 pixels per latent pixel, ``expand_timesteps``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _tiny_wan_pipeline import _nonzero, _tokenizer

Z_DIM = 4
"""Latent channels of the Wan 2.1-style VAE."""
TI2V_Z_DIM = 8
"""Latent channels of the tiny TI2V VAE (48 in the real one)."""
I2V_TEXT_TOKENS = 512
"""diffusers' Wan attention splits the image tokens off at ``len - 512``: an I2V prompt is 512 tokens."""
BOUNDARY_RATIO = 0.9
"""Switches experts between the 2nd and 3rd of 4 UniPC steps at flow_shift 3 (timesteps 999, 954, 882, 749)."""


def _transformer(in_channels: int, out_channels: int, seed: int, **extra):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=4,
        rope_max_seq_len=64,
        **extra,
    )
    return _nonzero(model, seed + 100)


def _text(tokens: int):
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _tokenizer()
    tokenizer.model_max_length = tokens
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    return tokenizer, text_encoder


def _vae(seed: int, **extra):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    z = extra.pop("z_dim", Z_DIM)
    means = [0.1, -0.2, 0.3, 0.0, 0.05, -0.1, 0.2, -0.3][:z]
    stds = [1.5, 0.8, 1.2, 1.0, 0.9, 1.1, 1.3, 0.7][:z]
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=z,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=means,
        latents_std=stds,
        **extra,
    )
    return _nonzero(vae, seed + 1)


def _scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def save_tiny_wan_i2v(path: Path, two_experts: bool = False, seed: int = 0) -> Path:
    """Wan 2.1 I2V (CLIP embeddings, one transformer) or, ``two_experts``, Wan 2.2 I2V A14B (no image encoder)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tokenizer, text_encoder = _text(I2V_TEXT_TOKENS)
    channels = 2 * Z_DIM + 4  # latent, image latent, 4 mask channels
    parts = {}
    if two_experts:
        parts["transformer"] = _transformer(channels, Z_DIM, seed + 2)
        parts["transformer_2"] = _transformer(channels, Z_DIM, seed + 3)
        parts["boundary_ratio"] = BOUNDARY_RATIO
    else:
        torch.manual_seed(seed + 4)
        parts["image_encoder"] = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=16,
            )
        ).eval()
        parts["image_processor"] = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        parts["transformer"] = _transformer(channels, Z_DIM, seed + 2, image_dim=16, added_kv_proj_dim=24)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=_vae(seed + 5), scheduler=_scheduler(), **parts
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_wan_two_experts(path: Path, seed: int = 0) -> Path:
    """Wan 2.2 T2V A14B: a high-noise ``transformer`` and a low-noise ``transformer_2`` switching at the boundary."""
    from diffusers import WanPipeline

    tokenizer, text_encoder = _text(12)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_vae(seed + 5),
        scheduler=_scheduler(),
        transformer=_transformer(Z_DIM, Z_DIM, seed + 2),
        transformer_2=_transformer(Z_DIM, Z_DIM, seed + 3),
        boundary_ratio=BOUNDARY_RATIO,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def _ti2v_vae(seed: int):
    """TI2V-5B's residual VAE layout: a patch of 2, 16 pixels per latent pixel (z_dim ``TI2V_Z_DIM``)."""
    return _vae(
        seed + 5, z_dim=TI2V_Z_DIM, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_spatial=16,
    )


def save_tiny_wan_ti2v(path: Path, seed: int = 0, image_to_video: bool = False) -> Path:
    """Wan 2.2 TI2V-5B's layout: its residual VAE with a patch of 2 (16 pixels per latent pixel), ``expand_timesteps``;
    as text-to-video (``WanPipeline``) or, ``image_to_video``, as ``WanImageToVideoPipeline`` (no image encoder: the
    image reaches the model as its latent, the video's first latent frame)."""
    import diffusers

    tokenizer, text_encoder = _text(12)
    kind = "WanImageToVideoPipeline" if image_to_video else "WanPipeline"
    extra = {"image_processor": None, "image_encoder": None} if image_to_video else {}
    pipe = getattr(diffusers, kind)(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_ti2v_vae(seed),
        scheduler=_scheduler(),
        transformer=_transformer(TI2V_Z_DIM, TI2V_Z_DIM, seed + 2),
        expand_timesteps=True,
        **extra,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_wan_ti2v_i2v(path: Path, seed: int = 0) -> Path:
    """Wan 2.2 TI2V-5B's image-to-video layout (``save_tiny_wan_ti2v``)."""
    return save_tiny_wan_ti2v(path, seed, image_to_video=True)


def save_test_image(path: Path, height: int = 40, width: int = 56) -> Path:
    """A small RGB picture (a colour ramp and a square), not the render's size: the pipeline resizes it."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, 128 + 0 * x], axis=-1).astype(np.uint8)
    pixels[10:25, 20:35] = (250, 30, 30)
    Image.fromarray(pixels).save(path)
    return path
