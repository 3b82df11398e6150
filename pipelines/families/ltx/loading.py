"""An LTX-Video pipeline directory (diffusers' ``LTXPipeline``) as the frame pipeline's video model.

``LTXVideoPipeline`` wraps the diffusers pipeline loaded from the directory and answers what a video render
asks of its model, each the way ``LTXPipeline.__call__`` does it:

- the prompt: ``LTXPipeline.encode_prompt`` (T5 embeddings and their attention mask, by keyword), handed to the
  frame pipeline as a dict of batch-first tensors;
- the latent: Tessera keeps [B, C, F, H, W] between steps (a frame block is a slice of frames); the frame
  adapter packs it into LTX's tokens and unpacks the model output (``pipelines.families.ltx.frames``);
- frames: ``AutoencoderKLLTXVideo`` packs ``temporal_factor`` (8) video frames into one latent frame and the
  first latent frame decodes to one frame (LTX's 8k+1 counts), 32 pixels per latent row and column;
- the sampler: FlowMatchEulerDiscreteScheduler with LTX's sigmas ``linspace(1, 1/steps, steps)`` and the
  shift ``mu`` of ``calculate_shift`` over the token count, for a block: its own tokens (with the whole video
  as one block, exactly diffusers' schedule);
- the decode: LTX's latents normalisation undone (``latents_mean``/``latents_std``), the VAE's ``timestep``
  and ``decode_noise_scale`` as the pipeline applies them (``pipelines.families.ltx.decode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.loading import check_pipeline_dir
from pipelines.video_pipeline import VideoPipelineBase

LTX_PIPELINE = "LTXPipeline"
REQUIRED = {
    "transformer": "LTXVideoTransformer3DModel",
    "vae": "AutoencoderKLLTXVideo",
    "scheduler": "FlowMatchEulerDiscreteScheduler",
}
LTX_MAX_SEQUENCE_LENGTH = 128
"""Prompt tokens ``LTXPipeline.__call__`` encodes a prompt to (its ``max_sequence_length``), whatever the
tokenizer's own ``model_max_length``: its T5 runs without an attention mask, so the padding changes every token's
embedding, and a shorter prompt (the tokenizer's limit, as before) differed from the pipeline's output by 1e-2."""


def vae_factors(vae: dict) -> tuple[int, int]:
    """(video frames, pixels) per latent frame and per latent row of an ``AutoencoderKLLTXVideo`` config, as the
    VAE computes them (its ``temporal_compression_ratio``/``spatial_compression_ratio``)."""
    scaling = sum(bool(s) for s in vae.get("spatio_temporal_scaling", (True, True, True, False)))
    temporal = vae.get("temporal_compression_ratio") or vae.get("patch_size_t", 1) * 2**scaling
    spatial = vae.get("spatial_compression_ratio") or vae.get("patch_size", 4) * 2**scaling
    return int(temporal), int(spatial)


def check_ltx_dir(path: str | Path, index: dict | None = None) -> dict:
    """Validate an LTX-Video pipeline directory from its JSON alone (``index``: its model_index.json, when
    already read); returns the model_index.json."""
    path = Path(path)
    index = check_pipeline_dir(path) if index is None else index
    for component, class_name in REQUIRED.items():
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] != class_name:
            raise ModelDirectoryError(
                f"{path} is not an LTX-Video pipeline: its {component} must be a {class_name}, got {entry}"
            )
    for component in ("text_encoder", "tokenizer"):
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"LTX-Video pipeline {path} lacks component folder {component}/")
    return index


@dataclass
class LTXVideoPipeline(VideoPipelineBase):
    """The loaded diffusers ``LTXPipeline`` with what a frame-pipelined render asks of it
    (``pipelines.video_pipeline.VideoPipeline``)."""

    pipe: Any
    """diffusers' LTXPipeline (its components in eval mode on one device)."""
    pipeline_class: str = LTX_PIPELINE
    """model_index.json's _class_name: the family registry finds the LTX family by it."""

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self.pipe.text_encoder

    @property
    def tokenizer(self) -> Any:
        return self.pipe.tokenizer

    @property
    def latent_dtype(self) -> torch.dtype:
        """float32 whatever the model's dtype: ``LTXPipeline`` prepares its latents so."""
        return torch.float32

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (8 for LTX-Video's VAE)."""
        return int(self.pipe.vae_temporal_compression_ratio)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent row and column (32 for LTX-Video's VAE)."""
        return int(self.pipe.vae_spatial_compression_ratio)

    def video_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames: the first gives one frame, each later one the
        decoder's frames per latent frame (8 for LTX-Video's VAE; ``decode.decoder_factors``)."""
        from pipelines.families.ltx.decode import decoder_factors
        from pipelines.frame_counts import decoded_frame_count

        return decoded_frame_count(latent_frames, decoder_factors(self.pipe.vae)[0])

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of one latent frame."""
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"height/width: {height}x{width} must be multiples of the VAE factor {factor}")
        return (self.transformer.config.in_channels, height // factor, width // factor)

    def make_scheduler(self) -> Any:
        """A fresh sampler (one per frame block) from the directory's scheduler config."""
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    def set_timesteps(
        self, scheduler: Any, steps: int, block_shape: tuple[int, int, int, int], device: Any
    ) -> None:
        """A block's schedule as ``LTXPipeline.__call__`` sets it: sigmas ``linspace(1, 1/steps, steps)`` and
        ``mu`` from ``calculate_shift`` over the block's tokens (latent frames x rows x columns, as the pipeline
        counts them); ``block_shape`` is (channels, frames, height, width) of the block's latent."""
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps

        _, frames, height, width = block_shape
        config = scheduler.config
        mu = calculate_shift(
            frames * height * width,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / steps, steps)
        retrieve_timesteps(scheduler, steps, device, None, sigmas=sigmas, mu=mu)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int | None = None) -> dict[str, torch.Tensor]:
        """{"prompt_embeds": [1, L, D], "prompt_attention_mask": [1, L]}: ``LTXPipeline.encode_prompt``'s
        output for ``prompt`` at ``max_sequence_length`` tokens (None: the pipeline's default), batch-first, as the
        frame adapter's ``conditions`` takes it."""
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompt=prompt,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length or LTX_MAX_SEQUENCE_LENGTH,
            device=self.text_encoder.device,
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def block_decoder(
        self,
        video_latent_frames: int | None = None,
        context: int | None = None,
        seed: int = 0,
        decode_timestep: float | None = None,
        decode_noise_scale: float | None = None,
    ):
        """A decoder of one video's finished blocks, called in block order: [1, C, F, h, w] -> uint8 frames, each
        window with ``context`` latent frames each way (None: the family's ``decode_context``), held back until the
        video's ``video_latent_frames`` after it are in (None: nothing held back); ``seed``: of the decode noise,
        when ``decode_noise_scale`` mixes any in; ``decode_timestep``, ``decode_noise_scale``: a job's own (None:
        LTXPipeline's defaults, timestep 0 and a noise scale that follows the timestep)."""
        from pipelines.families.ltx import LTXFamily
        from pipelines.families.ltx.decode import LTXBlockDecoder

        context = LTXFamily.decode_context if context is None else context
        timestep = 0.0 if decode_timestep is None else decode_timestep
        return LTXBlockDecoder(self.vae, timestep, decode_noise_scale, seed, context, video_latent_frames)

    @torch.no_grad()
    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] latent frames -> [F', H, W, 3] uint8 video frames, as if the block began the video
        (``block_decoder`` for the blocks of one video)."""
        return self.block_decoder()(latent)


def load_ltx_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> LTXVideoPipeline:
    """The LTX-Video pipeline at ``path`` (checked first), in eval mode on ``device``."""
    from pipelines.families.base import call_default
    from pipelines.loading import load_pipeline

    check_ltx_dir(path)
    pipe = load_pipeline(path, dtype, device)
    # what LTXPipeline.__call__ computes its rotary scale from (frames.rope_scale): its VAE's frames and pixels per
    # latent, which the transformer alone does not know, and its default frame_rate
    pipe.transformer.tessera_vae_compression = (pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio)
    pipe.transformer.tessera_frame_rate = call_default(pipe, "frame_rate")
    return LTXVideoPipeline(pipe)
