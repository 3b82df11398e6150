"""Load a video pipeline directory: a Wan-layout transformer, a VAE, a text encoder, a scheduler.

The layout is diffusers' (model_index.json and one folder per component, safetensors only). The
transformer must be a ``WanTransformer3DModel`` (the frame pipeline's model). What loads is a
``WanVideoPipeline``, the Wan family's ``pipelines.video_pipeline.VideoPipeline``. Two kinds load:

- Tessera's own layout (the built-in video model): an ``AutoencoderKL`` decoding frame by frame (one
  latent frame per video frame) and a CLIP text encoder;
- a diffusers ``WanPipeline`` directory as saved by ``WanPipeline.save_pretrained`` (Wan 2.1 T2V):
  the causal 3-D ``AutoencoderKLWan``, streamed block by block (``pipelines.wan_decode``), and a
  UMT5 text encoder whose prompt embeddings come from diffusers' own ``WanPipeline.encode_prompt``.
  Its VAE packs ``temporal_factor`` (4) video frames into one latent frame: a render's ``frames``,
  ``block_frames`` and ``context_frames`` still count video frames, divided by that factor for the
  frame pipeline, and the first latent frame decodes to a single frame, so ``frames`` latent-aligned
  frames give ``frames - 3`` video frames (Wan's usual 4k+1 counts). Wan 2.2's two-expert pipelines
  (``transformer_2``) and image-to-video pipelines are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.loading import check_pipeline_dir, load_video_parts
from pipelines.video_pipeline import VideoPipelineBase

REQUIRED = {"transformer": ("WanTransformer3DModel",), "vae": ("AutoencoderKL", "AutoencoderKLWan")}
WAN_PIPELINE = "WanPipeline"
WAN_MAX_SEQUENCE_LENGTH = 512
"""Prompt tokens WanPipeline encodes by default (fewer when the tokenizer's own limit is lower)."""


def check_video_dir(path: str | Path, index: dict | None = None) -> dict:
    """Validate a video pipeline directory (``index``: its model_index.json, when already read); returns
    its model_index.json."""
    path = Path(path)
    index = check_pipeline_dir(path) if index is None else index
    for component, class_names in REQUIRED.items():
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] not in class_names:
            raise ModelDirectoryError(
                f"{path} is not a video pipeline: its {component} must be a {' or '.join(class_names)}, "
                f"got {entry}"
            )
    second = index.get("transformer_2")
    if isinstance(second, list) and second and second[0] is not None:
        raise ModelDirectoryError(
            f"{path}: Wan 2.2's two-expert pipelines (transformer_2) are not supported by the frame pipeline"
        )
    if index.get("expand_timesteps"):
        raise ModelDirectoryError(f"{path}: Wan 2.2 TI2V pipelines (expand_timesteps) are not supported")
    for component in ("text_encoder", "tokenizer", "scheduler"):
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"video pipeline {path} lacks component folder {component}/")
    return index


@dataclass
class WanVideoPipeline(VideoPipelineBase):
    """The loaded parts of a Wan-layout video pipeline, in eval mode on one device: the family's
    ``pipelines.video_pipeline.VideoPipeline`` (its sampler hooks are the defaults)."""

    transformer: torch.nn.Module
    """WanTransformer3DModel."""
    vae: torch.nn.Module
    """Per-frame AutoencoderKL."""
    text_encoder: torch.nn.Module
    """CLIP text encoder."""
    tokenizer: object
    """Its tokenizer."""
    scheduler_config: dict
    """The scheduler's saved config (a fresh scheduler per frame block is made from it)."""
    scheduler_class: type
    """The diffusers scheduler class named in model_index.json."""
    pipeline_class: str = ""
    """model_index.json's _class_name: "WanPipeline" selects Wan's prompt encoding."""
    _text_pipeline: object = field(default=None, repr=False)
    """diffusers' WanPipeline over these components, made on first use, for its encode_prompt."""

    @property
    def causal_vae(self) -> bool:
        """Wan's 3-D VAE: frames are compressed in time and decoded with a cache across blocks."""
        return type(self.vae).__name__ == "AutoencoderKLWan"

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (1 for a per-frame VAE)."""
        return int(self.vae.config.scale_factor_temporal) if self.causal_vae else 1

    @property
    def vae_scale_factor(self) -> int:
        if self.causal_vae:
            return int(self.vae.config.scale_factor_spatial)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_frames(self, frames: int, field_name: str = "frames") -> int:
        """Latent frames for ``frames`` video frames (a multiple of the temporal factor)."""
        factor = self.temporal_factor
        if frames % factor:
            raise ValueError(
                f"{field_name}: this model's VAE packs {factor} frames into one latent frame; "
                f"{field_name} must be a multiple of {factor}, got {frames}"
            )
        return frames // factor

    def video_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames (a causal VAE's first one gives one frame)."""
        factor = self.temporal_factor
        return latent_frames if factor == 1 else 1 + factor * (latent_frames - 1)

    def block_decoder(self):
        """A decoder of one video's finished blocks, called in block order: [1, C, F, h, w] -> uint8 frames."""
        if self.causal_vae:
            from pipelines.families.wan.decode import WanBlockDecoder

            return WanBlockDecoder(self.vae)
        return self.decode_block

    def make_scheduler(self):
        return self.scheduler_class.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """[1, tokens, width] embeddings of ``prompt``, as the model's own diffusers pipeline makes them."""
        if self.pipeline_class == WAN_PIPELINE:
            if self._text_pipeline is None:
                from diffusers import WanPipeline

                self._text_pipeline = WanPipeline(
                    tokenizer=self.tokenizer,
                    text_encoder=self.text_encoder,
                    vae=self.vae,
                    scheduler=self.make_scheduler(),
                    transformer=self.transformer,
                )
            length = min(WAN_MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))
            embeds, _ = self._text_pipeline.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                max_sequence_length=length,
                device=self.text_encoder.device,
            )
            return embeds
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0]

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of one latent frame."""
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"height/width: {height}x{width} must be multiples of the VAE factor {factor}")
        return (self.transformer.config.in_channels, height // factor, width // factor)

    @torch.no_grad()
    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] latent frames -> [F, H, W, 3] uint8 video frames (a causal VAE: as if the
        block began the video; use ``block_decoder`` for the blocks of one video)."""
        if self.causal_vae:
            return self.block_decoder()(latent)
        frames = latent[0].transpose(0, 1).to(device=self.vae.device, dtype=self.vae.dtype)
        images = self.vae.decode(frames / self.vae.config.scaling_factor, return_dict=False)[0]
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()


def load_video_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> WanVideoPipeline:
    index = check_video_dir(path)
    return WanVideoPipeline(*load_video_parts(path, index, dtype, device), pipeline_class=index["_class_name"])
