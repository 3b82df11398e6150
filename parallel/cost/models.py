"""Published model configs as data, built on the meta device (no weights, no download).

Each ``ModelSpec`` holds the diffusers class name and the config dictionary of the model's denoiser as
published in its ``config.json`` on the Hugging Face hub (copied here by hand), plus what the cost model
needs to make inputs of the right shapes: latent channels, VAE downsampling, the text encoder's sequence
length and width. ``builtin-image`` reads its config from the repository's pipeline directory.

The inputs a forward takes depend on the architecture, the spec's ``kind`` (the cost model's own vocabulary,
never a class name):

- "unet": the latent image, a timestep, the text embeddings (and SDXL's added conditioning, ``extra``);
- "dit": PixArt's: the latent image, the text, a timestep and the resolution conditioning;
- "video-dit": Wan's: a video latent (B, C, F, H, W), a timestep and the text;
- "video-mmdit-bfchw": joint text-video attention over a frames-first video latent (CogVideoX): the latent
  (B, F, C, H, W), the text tokens, a timestep and, for rotary configs, the rotary table of the video's tokens;
- "video-packed": a video latent packed into tokens before the denoiser (LTX-Video): the tokens
  (B, F/p_t x H/p x W/p, C x p_t x p x p), the text and its mask by cross-attention, a timestep, the latent's
  frames, rows and columns and the rotary interpolation scale;
- "video-mmdit": joint text-video attention over a video latent (HunyuanVideo): the latent (B, C, F, H, W), a
  timestep, the text tokens and their mask, the pooled text projection (``extra``) and the embedded guidance;
- "mmdit": joint text-image attention over the latent image (SD3's MMDiT): the latent, the text tokens, the
  pooled text projection, a timestep;
- "mmdit-ids": joint attention over 2x2-packed latent tokens with rotary positions from id tensors (FLUX.1):
  packed tokens, the text tokens, the pooled projection, a timestep, image and text ids, and the distilled
  guidance when the config embeds it;
- "mmdit-shapes": joint attention over 2x2-packed latent tokens with rotary positions from the image's shape
  (Qwen-Image): packed tokens, the text tokens, a timestep and the image's (frames, rows, columns) in tokens.
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
    """One of ``KINDS``: the architecture, which decides the inputs of a forward (see the module docstring)."""
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
    """Config of the VAE whose decoder ends a render (an image's once, serial unless the strategy splits it; a
    video's block by block, ``parallel.cost.video``)."""
    vae_class: str = "AutoencoderKL"
    """diffusers class of ``vae_config`` (a video family's own VAE: ``AutoencoderKLWan``, ...)."""
    decode_by_frames: bool = False
    """A video model whose VAE decodes each frame apart (an image VAE applied per frame): stages may share a block's
    decode; otherwise its (causal) VAE decodes whole blocks, in order, on one worker."""
    decode_extra_frames: int = 0
    """Latent frames a block's decode takes beyond its own: a windowed VAE's context (LTX-Video's, both ways), a
    temporally tiled one's overlap of its tiles (HunyuanVideo's: each tile decoded once)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-kind extras (e.g. SDXL's pooled-text and time-id widths; an MMDiT's pooled projection width)."""
    packing: int = 1
    """Latent rows and columns the pipeline packs into one token before the denoiser (2 for FLUX.1 and
    Qwen-Image, whose pipelines pack 2x2 latent patches); 1: the denoiser takes the latent image."""
    batch: int = 2
    """Forward batch of one denoising step as the pipeline runs it by default: 2 with classifier-free
    guidance batched, 1 for a guidance-distilled model (FLUX.1-dev takes its guidance as an input)."""

    def latent_shape(self, batch: int, height: int, width: int, frames: int = 1) -> tuple[int, ...]:
        """The (unpacked) latent: what the sampler steps, patch bands split and the VAE decodes."""
        h, w = height // self.vae_scale, width // self.vae_scale
        if self.kind in VIDEO_KINDS:
            return (batch, self.latent_channels, (frames - 1) // self.temporal_scale + 1, h, w)
        return (batch, self.latent_channels, h, w)

    @property
    def token_patch(self) -> int:
        """Latent rows (and columns) per transformer token: the pipeline's packing, else the model's patch."""
        if self.packing > 1:
            return self.packing
        patch = self.config.get("patch_size", 1) or 1
        return int(patch[-1]) if isinstance(patch, (list, tuple)) else int(patch)

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens of one image in the transformer's sequence (transformer kinds; one latent frame)."""
        p = self.token_patch
        return (height // self.vae_scale // p) * (width // self.vae_scale // p)


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

# The three below are written from memory of their published transformer/config.json (no download is
# possible here). Sure: every value of FLUX.1-dev; SD3.5-large's and -medium's widths, depths, patch, qk_norm,
# caption and pooled widths and pos_embed_max_size; Qwen-Image's depth, heads, head width, joint_attention_dim,
# in/out channels and patch. Checked: the parameter counts they build to (tests/cost/test_profile_joint_models.py)
# are the published sizes (FLUX.1 11.9B of "12B", SD3.5-large 8.06B of "8.1B", SD3.5-medium's MMDiT-X 2.24B of
# "2.5B" with its text-side layers, Qwen-Image 20.4B of "20B").

FLUX1_DEV = dict(
    attention_head_dim=128,
    guidance_embeds=True,
    in_channels=64,
    joint_attention_dim=4096,
    num_attention_heads=24,
    num_layers=19,
    num_single_layers=38,
    patch_size=1,
    pooled_projection_dim=768,
    axes_dims_rope=[16, 56, 56],
)  # black-forest-labs/FLUX.1-dev, transformer/config.json (FLUX.1-schnell: guidance_embeds false)

FLUX_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=16,
    layers_per_block=2,
    mid_block_add_attention=True,
    norm_num_groups=32,
    out_channels=3,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    up_block_types=["UpDecoderBlock2D"] * 4,
    use_post_quant_conv=False,
    use_quant_conv=False,
)  # black-forest-labs/FLUX.1-dev, vae/config.json; SD3.5's VAE is the same network (other scale and shift)

SD35_LARGE = dict(
    attention_head_dim=64,
    caption_projection_dim=2432,
    dual_attention_layers=[],
    in_channels=16,
    joint_attention_dim=4096,
    num_attention_heads=38,
    num_layers=38,
    out_channels=16,
    patch_size=2,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
    sample_size=128,
)  # stabilityai/stable-diffusion-3.5-large, transformer/config.json: qk norm, no dual-attention block

SD35_MEDIUM = dict(
    SD35_LARGE,
    caption_projection_dim=1536,
    dual_attention_layers=list(range(13)),
    num_attention_heads=24,
    num_layers=24,
    pos_embed_max_size=384,
)  # stabilityai/stable-diffusion-3.5-medium, transformer/config.json (MMDiT-X: dual attention in blocks 0-12)

QWEN_IMAGE = dict(
    attention_head_dim=128,
    axes_dims_rope=[16, 56, 56],
    guidance_embeds=False,
    in_channels=64,
    joint_attention_dim=3584,
    num_attention_heads=24,
    num_layers=60,
    out_channels=16,
    patch_size=2,
)  # Qwen/Qwen-Image, transformer/config.json

SD3_TEXT_TOKENS = 77 + 256
"""StableDiffusion3Pipeline's joint text: CLIP's 77 tokens, then T5's ``max_sequence_length`` (256 in __call__)."""
FLUX_TEXT_TOKENS = 512
"""FluxPipeline.__call__'s ``max_sequence_length`` for FLUX.1-dev: T5 pads every prompt to it."""
QWEN_TEXT_TOKENS = 256
"""Qwen-Image passes only the prompt's own Qwen2.5-VL tokens (the template's dropped), at most
``max_sequence_length`` = 512: 256 is taken for a long prompt (an assumption, not a published figure)."""


KINDS = (
    "unet", "dit", "video-dit", "video-mmdit", "video-mmdit-bfchw", "video-packed", "mmdit", "mmdit-ids", "mmdit-shapes"
)
"""Architectures the cost model has an input recipe for (see the module docstring)."""
PACKED_KINDS = ("mmdit-ids", "mmdit-shapes", "video-packed")
"""Kinds whose denoiser takes the latent as packed tokens, (B, tokens, channels x packing^2)."""
VIDEO_KINDS = ("video-dit", "video-mmdit", "video-mmdit-bfchw", "video-packed")
"""Kinds whose latent is a video, (B, C, latent frames, H, W)."""


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
        "flux.1-dev": ModelSpec(
            "flux.1-dev",
            "FluxTransformer2DModel",
            FLUX1_DEV,
            "mmdit-ids",
            latent_channels=16,
            text_len=FLUX_TEXT_TOKENS,
            text_dim=4096,
            dtype="bfloat16",
            vae_config=FLUX_VAE,
            extra={"pooled_projections": 768},
            packing=2,
            batch=1,
        ),
        "sd3.5-large": ModelSpec(
            "sd3.5-large",
            "SD3Transformer2DModel",
            SD35_LARGE,
            "mmdit",
            latent_channels=16,
            text_len=SD3_TEXT_TOKENS,
            text_dim=4096,
            dtype="bfloat16",
            vae_config=dict(FLUX_VAE, scaling_factor=1.5305, shift_factor=0.0609),
            extra={"pooled_projections": 2048},
        ),
        "sd3.5-medium": ModelSpec(
            "sd3.5-medium",
            "SD3Transformer2DModel",
            SD35_MEDIUM,
            "mmdit",
            latent_channels=16,
            text_len=SD3_TEXT_TOKENS,
            text_dim=4096,
            dtype="bfloat16",
            vae_config=dict(FLUX_VAE, scaling_factor=1.5305, shift_factor=0.0609),
            extra={"pooled_projections": 2048},
        ),
        "qwen-image": ModelSpec(
            "qwen-image",
            "QwenImageTransformer2DModel",
            QWEN_IMAGE,
            "mmdit-shapes",
            latent_channels=16,
            text_len=QWEN_TEXT_TOKENS,
            text_dim=3584,
            dtype="bfloat16",
            packing=2,
        ),
    }


def with_defaults(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A config.json's values completed with the diffusers class's defaults for what it leaves out (its
    ``_``-prefixed keys dropped): what a model family describes a directory's denoiser with."""
    import inspect

    import diffusers

    params = inspect.signature(getattr(diffusers, class_name).__init__).parameters
    defaults = {n: p.default for n, p in params.items() if n != "self" and p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}


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
    import diffusers

    with torch.device("meta"):
        vae = getattr(diffusers, spec.vae_class).from_config(spec.vae_config)
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
    if spec.kind not in KINDS:
        raise ValueError(f"model: no input recipe for kind {spec.kind!r}; known: {KINDS}")
    dtype = dtype or getattr(torch, spec.dtype)
    latent = torch.empty(spec.latent_shape(batch, height, width, frames), dtype=dtype, device=device)
    text = torch.empty(batch, spec.text_len, spec.text_dim, dtype=dtype, device=device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    if spec.kind.startswith("mmdit"):
        return _joint_inputs(spec, latent, text, height, width, device)
    if spec.kind == "unet":
        kwargs: dict[str, Any] = {"encoder_hidden_states": text}
        if spec.extra:
            kwargs["added_cond_kwargs"] = {
                k: torch.empty(batch, n, dtype=dtype, device=device) for k, n in spec.extra.items()
            }
        return (latent, t), kwargs
    if spec.kind == "video-packed":
        return _video_packed_inputs(spec, latent, text, device)
    if spec.kind == "video-mmdit-bfchw":
        return _frames_first_inputs(spec, latent, text, device)
    if spec.kind == "video-mmdit":
        kwargs = {
            "timestep": t,
            "encoder_hidden_states": text,
            "encoder_attention_mask": torch.ones(batch, spec.text_len, dtype=torch.bool, device=device),
            "guidance": torch.empty(batch, dtype=dtype, device=device),
        }
        kwargs.update({k: torch.empty(batch, n, dtype=dtype, device=device) for k, n in spec.extra.items()})
        return (latent,), kwargs
    if spec.kind == "dit":
        cond = {
            "resolution": torch.empty(batch, 2, dtype=dtype, device=device),
            "aspect_ratio": torch.empty(batch, 1, dtype=dtype, device=device),
        }
        return (latent,), {"encoder_hidden_states": text, "timestep": t, "added_cond_kwargs": cond}
    return (latent, t, text), {}  # video-dit


def _frames_first_inputs(
    spec: ModelSpec, latent: torch.Tensor, text: torch.Tensor, device: str | torch.device
) -> tuple[tuple, dict[str, Any]]:
    """CogVideoX's inputs as ``CogVideoXPipeline.__call__`` passes them: the latent frames first, the text, an
    integer timestep, and for a rotary config a (cos, sin) table of one row per video token."""
    batch = latent.shape[0]
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": text,
        "timestep": torch.full((batch,), 500, dtype=torch.long, device=device),
    }
    if spec.config.get("use_rotary_positional_embeddings"):
        _, _, frames, rows, columns = latent.shape
        p, p_t = int(spec.config.get("patch_size", 2)), int(spec.config.get("patch_size_t") or 1)
        tokens = -(-frames // p_t) * (rows // p) * (columns // p)
        dim = int(spec.config.get("attention_head_dim", 64))
        kwargs["image_rotary_emb"] = tuple(torch.empty(tokens, dim, device=device) for _ in range(2))
    return (latent.transpose(1, 2),), kwargs


def _video_packed_inputs(
    spec: ModelSpec, latent: torch.Tensor, text: torch.Tensor, device: str | torch.device
) -> tuple[tuple, dict[str, Any]]:
    """LTX-Video's inputs: the latent packed as ``LTXPipeline._pack_latents`` packs it, the text with its mask, a
    flow-matching timestep, the latent grid and the rotary scale ``LTXPipeline.__call__`` passes at 25 fps."""
    batch, channels, frames, rows, columns = latent.shape
    p, p_t = spec.packing, int(spec.config.get("patch_size_t", 1) or 1)
    tokens = (frames // p_t) * (rows // p) * (columns // p)
    packed = torch.empty(batch, tokens, channels * p_t * p * p, dtype=latent.dtype, device=device)
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": text,
        "timestep": torch.full((batch,), 500.0, dtype=latent.dtype, device=device),
        "encoder_attention_mask": torch.ones(batch, spec.text_len, dtype=torch.bool, device=device),
        "num_frames": frames // p_t,
        "height": rows // p,
        "width": columns // p,
        "rope_interpolation_scale": (spec.temporal_scale / 25, spec.vae_scale, spec.vae_scale),
    }
    return (packed,), kwargs


def _joint_inputs(
    spec: ModelSpec, latent: torch.Tensor, text: torch.Tensor, height: int, width: int, device: str | torch.device
) -> tuple[tuple, dict[str, Any]]:
    """The MMDiT kinds' inputs: the latent (packed into tokens for "mmdit-ids" and "mmdit-shapes"), the text,
    a timestep, and each kind's conditioning and positions."""
    batch, dtype = latent.shape[0], latent.dtype
    t = torch.full((batch,), 0.5, dtype=dtype, device=device)  # flow matching: a float timestep
    kwargs: dict[str, Any] = {"encoder_hidden_states": text, "timestep": t}
    kwargs.update({k: torch.empty(batch, n, dtype=dtype, device=device) for k, n in spec.extra.items()})
    if spec.kind == "mmdit":
        return (latent,), kwargs
    p = spec.packing
    rows, columns = height // spec.vae_scale // p, width // spec.vae_scale // p
    packed = torch.empty(batch, rows * columns, spec.latent_channels * p * p, dtype=dtype, device=device)
    if spec.kind == "mmdit-ids":
        kwargs["img_ids"] = torch.empty(rows * columns, 3, dtype=dtype, device=device)
        kwargs["txt_ids"] = torch.empty(spec.text_len, 3, dtype=dtype, device=device)
        if spec.config.get("guidance_embeds"):
            kwargs["guidance"] = torch.empty(batch, dtype=torch.float32, device=device)
    else:  # mmdit-shapes
        kwargs["img_shapes"] = [(1, rows, columns)] * batch
    return (packed,), kwargs
