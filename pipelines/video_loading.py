"""Load a video pipeline directory: a Wan-layout transformer, a per-frame VAE, a text encoder, a scheduler.

The layout is diffusers' (model_index.json and one folder per component, safetensors only). The
transformer must be a ``WanTransformer3DModel`` (the frame pipeline's model); the VAE an
``AutoencoderKL`` decoding frame by frame, so blocks stream out one at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.loading import check_pipeline_dir, load_model, parse_dtype

REQUIRED = {"transformer": "WanTransformer3DModel", "vae": "AutoencoderKL"}


def check_video_dir(path: str | Path) -> dict:
    """Validate a video pipeline directory; returns its model_index.json."""
    path = Path(path)
    index = check_pipeline_dir(path)
    for component, class_name in REQUIRED.items():
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] != class_name:
            raise ModelDirectoryError(
                f"{path} is not a video pipeline: its {component} must be a {class_name}, got {entry}"
            )
    for component in ("text_encoder", "tokenizer", "scheduler"):
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"video pipeline {path} lacks component folder {component}/")
    return index


@dataclass
class VideoPipeline:
    """The loaded parts of a video pipeline, in eval mode on one device."""

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

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def make_scheduler(self):
        return self.scheduler_class.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
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
        """[1, C, F, h, w] latent frames -> [F, H, W, 3] uint8 video frames."""
        frames = latent[0].transpose(0, 1).to(device=self.vae.device, dtype=self.vae.dtype)
        images = self.vae.decode(frames / self.vae.config.scaling_factor, return_dict=False)[0]
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()


def load_video_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> VideoPipeline:
    import diffusers
    import transformers

    path = Path(path)
    index = check_video_dir(path)
    transformer = load_model(path / "transformer", dtype, device)
    vae = load_model(path / "vae", dtype, device)
    try:
        text_class = getattr(transformers, index["text_encoder"][1])
        tokenizer_class = getattr(transformers, index["tokenizer"][1])
        text_encoder = text_class.from_pretrained(
            path / "text_encoder", dtype=parse_dtype(dtype), use_safetensors=True, local_files_only=True
        )
        tokenizer = tokenizer_class.from_pretrained(path / "tokenizer", local_files_only=True)
        scheduler_class = getattr(diffusers, index["scheduler"][1])
    except (AttributeError, OSError, TypeError, ValueError) as err:
        raise ModelDirectoryError(f"could not load the video pipeline at {path}: {err}") from err
    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return VideoPipeline(
        transformer, vae, text_encoder.to(device).eval(), tokenizer, scheduler_config, scheduler_class
    )
