"""Published model configs as data, built on the meta device (no weights, no download).

Each ``ModelSpec`` holds the diffusers class name and the config dictionary of the model's denoiser as
published in its ``config.json`` on the Hugging Face hub (copied here by hand), plus what the cost model
needs to make inputs of the right shapes: latent channels, VAE downsampling, the text encoder's sequence
length and width. ``builtin-image`` reads its config from the repository's pipeline directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

BUILTIN_UNET_CONFIG = Path(__file__).resolve().parents[2] / "pipelines/builtin/builtin-image/unet/config.json"


@dataclass(frozen=True)
class ModelSpec:
    """A denoiser architecture and the shapes of its inputs."""

    name: str
    """Registry name."""
    class_name: str
    """diffusers model class (e.g. "UNet2DConditionModel")."""
    config: dict[str, Any]
    """The class's config dictionary, as published."""
    kind: str
    """"unet", "dit" (2D token patches) or "video-dit" (3D patches over latent frames)."""
    latent_channels: int
    """Channels of the VAE latent."""
    vae_scale: int = 8
    """Pixels per latent row/column."""
    text_len: int = 77
    """Text encoder sequence length the denoiser cross-attends to."""
    text_dim: int = 2048
    """Width of the text embeddings passed to the denoiser."""
    temporal_scale: int = 1
    """Frames per latent frame (video VAEs), the first frame excepted."""
    dtype: str = "float16"
    """Precision the model is published to run in."""
    vae_config: dict[str, Any] | None = None
    """AutoencoderKL config whose decoder runs once at the end (serial unless the strategy splits it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-kind extras (e.g. SDXL's pooled-text and time-id widths)."""

    def latent_shape(self, batch: int, height: int, width: int, frames: int = 1) -> tuple[int, ...]:
        h, w = height // self.vae_scale, width // self.vae_scale
        if self.kind == "video-dit":
            return (batch, self.latent_channels, (frames - 1) // self.temporal_scale + 1, h, w)
        return (batch, self.latent_channels, h, w)


SDXL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    center_input_sample=False,
    cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    upcast_attention=False,
    use_linear_projection=True,
)  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json

SDXL_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=1024,
    scaling_factor=0.13025,
    up_block_types=["UpDecoderBlock2D"] * 4,
)  # stabilityai/stable-diffusion-xl-base-1.0, vae/config.json

PIXART_ALPHA_1024 = dict(
    activation_fn="gelu-approximate",
    attention_bias=True,
    attention_head_dim=72,
    caption_channels=4096,
    cross_attention_dim=1152,
    dropout=0.0,
    in_channels=4,
    norm_elementwise_affine=False,
    norm_eps=1e-06,
    norm_num_groups=32,
    norm_type="ada_norm_single",
    num_attention_heads=16,
    num_embeds_ada_norm=1000,
    num_layers=28,
    out_channels=8,
    patch_size=2,
    sample_size=128,
    upcast_attention=False,
    use_additional_conditions=True,
)  # PixArt-alpha/PixArt-XL-2-1024-MS, transformer/config.json

WAN21_T2V_1_3B = dict(
    patch_size=[1, 2, 2],
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-06,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json

WAN21_T2V_14B = dict(WAN21_T2V_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json (width 40 x 128 = 5120)

WAN_VAE_Z_DIM = 16


def _builtin_config() -> dict[str, Any]:
    return {k: v for k, v in json.loads(BUILTIN_UNET_CONFIG.read_text()).items() if not k.startswith("_")}


def registry() -> dict[str, ModelSpec]:
    """Every known model by name."""
    builtin = _builtin_config()
    return {
        "builtin-image": ModelSpec(
            "builtin-image",
            "UNet2DConditionModel",
            builtin,
            "unet",
            latent_channels=4,
            text_dim=builtin["cross_attention_dim"],
            dtype="float32",
        ),
        "sdxl": ModelSpec(
            "sdxl",
            "UNet2DConditionModel",
            SDXL_UNET,
            "unet",
            latent_channels=4,
            text_dim=2048,
            vae_config=SDXL_VAE,
            extra={"text_embeds": 1280, "time_ids": 6},
        ),
        "pixart-alpha": ModelSpec(
            "pixart-alpha",
            "PixArtTransformer2DModel",
            PIXART_ALPHA_1024,
            "dit",
            latent_channels=4,
            text_len=120,
            text_dim=4096,
        ),
        "wan2.1-1.3b": ModelSpec(
            "wan2.1-1.3b",
            "WanTransformer3DModel",
            WAN21_T2V_1_3B,
            "video-dit",
            latent_channels=WAN_VAE_Z_DIM,
            text_len=512,
            text_dim=4096,
            temporal_scale=4,
            dtype="bfloat16",
        ),
        "wan2.1-14b": ModelSpec(
            "wan2.1-14b",
            "WanTransformer3DModel",
            WAN21_T2V_14B,
            "video-dit",
            latent_channels=WAN_VAE_Z_DIM,
            text_len=512,
            text_dim=4096,
            temporal_scale=4,
            dtype="bfloat16",
        ),
    }


def get_model_spec(name: str | ModelSpec) -> ModelSpec:
    if isinstance(name, ModelSpec):
        return name
    models = registry()
    if name not in models:
        raise KeyError(f"model: unknown model {name!r}; known: {sorted(models)}")
    return models[name]


def build_meta(spec: ModelSpec, dtype: torch.dtype | None = None) -> nn.Module:
    """The denoiser on the meta device (shapes only), in eval mode, in ``dtype`` (default: the spec's)."""
    import diffusers

    cls = getattr(diffusers, spec.class_name)
    with torch.device("meta"):
        model = cls.from_config(spec.config)
    return model.to(dtype or getattr(torch, spec.dtype)).eval()


def build_vae_decoder_meta(spec: ModelSpec, dtype: torch.dtype | None = None) -> nn.Module | None:
    """The VAE (on meta) whose ``decode`` ends a render, when the spec names one."""
    if spec.vae_config is None:
        return None
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(spec.vae_config)
    return vae.to(dtype or getattr(torch, spec.dtype)).eval()


def example_inputs(
    spec: ModelSpec,
    batch: int,
    height: int,
    width: int,
    frames: int = 1,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "meta",
) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) for one forward of the denoiser on a ``batch`` of latents for this image/video size."""
    dtype = dtype or getattr(torch, spec.dtype)
    latent = torch.empty(spec.latent_shape(batch, height, width, frames), dtype=dtype, device=device)
    text = torch.empty(batch, spec.text_len, spec.text_dim, dtype=dtype, device=device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    if spec.kind == "unet":
        kwargs: dict[str, Any] = {"encoder_hidden_states": text}
        if spec.extra:
            kwargs["added_cond_kwargs"] = {
                k: torch.empty(batch, n, dtype=dtype, device=device) for k, n in spec.extra.items()
            }
        return (latent, t), kwargs
    if spec.kind == "dit":
        cond = {
            "resolution": torch.empty(batch, 2, dtype=dtype, device=device),
            "aspect_ratio": torch.empty(batch, 1, dtype=dtype, device=device),
        }
        return (latent,), {"encoder_hidden_states": text, "timestep": t, "added_cond_kwargs": cond}
    if spec.kind == "video-dit":
        return (latent, t, text), {}
    raise ValueError(f"model: no input recipe for kind {spec.kind!r}")
