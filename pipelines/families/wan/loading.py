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
  frames give ``frames - 3`` video frames (Wan's usual 4k+1 counts).

Wan 2.2's layouts load too:

- the two-expert A14B layout (``transformer_2`` and model_index.json's ``boundary_ratio``): both experts are
  loaded into one ``pipelines.families.wan.experts.WanExperts`` (the high-noise ``transformer`` for timesteps
  at or above ``boundary_ratio * num_train_timesteps``, the low-noise ``transformer_2`` below, as diffusers
  switches them), which the frame plan runs step by step;
- the TI2V-5B layout (``expand_timesteps``, its own ``AutoencoderKLWan`` with ``z_dim`` 48, a VAE patch of 2 and
  16 pixels per latent pixel) as text-to-video: diffusers' per-token timesteps are all ``t`` there, which the
  frame plan's one timestep per step equals;
- ``WanImageToVideoPipeline`` (2.1 I2V with its CLIP image encoder, 2.2 I2V without one): a render's
  ``image`` conditions it (``pipelines.families.wan.image``); a TI2V image-to-video directory
  (``WanImageToVideoPipeline`` with ``expand_timesteps``) holds the first latent frame at the image's latent, its
  tokens at timestep 0 (``frames.WanFrameAdapter``; ``sequence.WanSequenceAdapter`` for the whole-video plans).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.frame_counts import decoded_frame_count
from pipelines.loading import check_pipeline_dir, load_model, load_video_parts, parse_dtype
from pipelines.video_pipeline import VideoPipelineBase

REQUIRED = {"transformer": ("WanTransformer3DModel",), "vae": ("AutoencoderKL", "AutoencoderKLWan")}
WAN_PIPELINE = "WanPipeline"
WAN_I2V_PIPELINE = "WanImageToVideoPipeline"
DIFFUSERS_PIPELINES = (WAN_PIPELINE, WAN_I2V_PIPELINE)
"""The diffusers pipelines whose prompts are encoded with WanPipeline.encode_prompt (UMT5)."""
WAN_MAX_SEQUENCE_LENGTH = 512
"""Prompt tokens ``WanPipeline.__call__`` (and the image-to-video pipeline's) encodes a prompt to (its
``max_sequence_length``), whatever the tokenizer's own ``model_max_length``: the pipeline pads the embeddings with
zeros to that length and the cross-attention attends to them all, so fewer (the tokenizer's limit, as before) is
not the pipeline's output."""


def check_video_dir(path: str | Path, index: dict | None = None) -> dict:
    """Validate a video pipeline directory (``index``: its model_index.json, when already read); returns
    its model_index.json."""
    path = Path(path)
    index = check_pipeline_dir(path) if index is None else index
    if not has_component(index, "transformer") and has_component(index, "transformer_2"):
        raise ModelDirectoryError(
            f"{path}: a Wan 2.2 pipeline with only its low-noise expert (transformer null, transformer_2 set) is not "
            "supported; save the expert as the transformer of a one-transformer pipeline"
        )
    for component, class_names in REQUIRED.items():
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] not in class_names:
            raise ModelDirectoryError(
                f"{path} is not a video pipeline: its {component} must be a {' or '.join(class_names)}, "
                f"got {entry}"
            )
    if has_component(index, "transformer_2"):
        entry = index["transformer_2"]
        if entry[1] not in REQUIRED["transformer"] or not isinstance(index.get("boundary_ratio"), (int, float)):
            raise ModelDirectoryError(
                f"{path}: a two-expert pipeline needs a WanTransformer3DModel transformer_2 and a numeric "
                f"boundary_ratio in model_index.json, got {entry} and {index.get('boundary_ratio')!r}"
            )
    transformer = path / "transformer" / "config.json"
    if transformer.is_file() and json.loads(transformer.read_text()).get("pos_embed_seq_len") is not None:
        raise ModelDirectoryError(
            f"{path}: a first-last-frame Wan model (FLF2V: the transformer's pos_embed_seq_len) conditions on a last "
            "image too, which Tessera's image-to-video does not take"
        )
    if has_component(index, "image_encoder") and not (path / "image_processor").is_dir():
        raise ModelDirectoryError(f"video pipeline {path} has an image_encoder but no image_processor/")
    components = ["text_encoder", "tokenizer", "scheduler"]
    components += [name for name in ("transformer_2", "image_encoder") if has_component(index, name)]
    for component in components:
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"video pipeline {path} lacks component folder {component}/")
    return index


def has_component(index: dict, name: str) -> bool:
    """model_index.json names a component ``name`` (an optional one is saved as [null, null] when absent)."""
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


@dataclass
class WanVideoPipeline(VideoPipelineBase):
    """The loaded parts of a Wan-layout video pipeline, in eval mode on one device: the family's
    ``pipelines.video_pipeline.VideoPipeline`` (its sampler hooks are the defaults)."""

    transformer: torch.nn.Module
    """WanTransformer3DModel, or a two-expert pipeline's ``WanExperts``."""
    vae: torch.nn.Module
    """Per-frame AutoencoderKL or Wan's causal AutoencoderKLWan."""
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
    expand_timesteps: bool = False
    """model_index.json's ``expand_timesteps`` (Wan 2.2 TI2V): per-token timesteps; with an image, the first latent
    frame is the image's latent at timestep 0."""
    image_encoder: torch.nn.Module | None = None
    """Wan 2.1 I2V's CLIP vision model (None: no image embeddings, e.g. Wan 2.2 I2V)."""
    image_processor: object = None
    """Its CLIPImageProcessor."""
    _text_pipeline: object = field(default=None, repr=False)
    """diffusers' WanPipeline over these components, made on first use, for its encode_prompt."""
    _image_pipeline: object = field(default=None, repr=False)
    """diffusers' WanImageToVideoPipeline over these components, made on first use, for its image conditioning."""

    def guidance_schedule(self, spec: Any) -> Callable[[float], float] | None:
        """A two-expert pipeline with the job's ``guidance_scale_2``: that weight below the experts' boundary
        (``WanExperts.boundary_timestep``), ``guidance_scale`` at or above it, as ``WanPipeline`` switches."""
        boundary = getattr(self.transformer, "boundary_timestep", None)
        second = getattr(spec, "guidance_scale_2", None)
        if boundary is None or second is None:
            return None
        first = spec.guidance_scale
        return lambda timestep: first if timestep >= boundary else second

    @property
    def first_expert(self) -> torch.nn.Module:
        """The (high-noise) WanTransformer3DModel: the one model of a one-expert pipeline."""
        return getattr(self.transformer, "high", self.transformer)

    @property
    def takes_image(self) -> bool:
        """An image-to-video pipeline: a render must give it a conditioning image."""
        return self.pipeline_class == WAN_I2V_PIPELINE

    @property
    def causal_vae(self) -> bool:
        """Wan's 3-D VAE: frames are compressed in time and decoded with a cache across blocks."""
        return type(self.vae).__name__ == "AutoencoderKLWan"

    @property
    def latent_dtype(self) -> torch.dtype:
        """float32 whatever the model's dtype: ``WanPipeline`` prepares its latents so."""
        return torch.float32

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (1 for a per-frame VAE)."""
        return int(self.vae.config.scale_factor_temporal) if self.causal_vae else 1

    @property
    def vae_scale_factor(self) -> int:
        if self.causal_vae:
            return int(self.vae.config.scale_factor_spatial)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def video_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames (a causal VAE's first one gives one frame)."""
        return decoded_frame_count(latent_frames, self.temporal_factor)

    @property
    def frames_decode_apart(self) -> bool:
        """The per-frame VAE decodes each latent frame on its own: stages may split a block's decode by frames."""
        return not self.causal_vae

    def block_decoder(self, video_latent_frames: int | None = None, context: int | None = None):
        """A decoder of one video's finished blocks, called in block order: [1, C, F, h, w] -> uint8 frames (the
        causal VAE's cache carries its state: no context)."""
        if self.causal_vae:
            from pipelines.families.wan.decode import WanBlockDecoder

            return WanBlockDecoder(self.vae)
        return self.decode_block

    def make_scheduler(self):
        return self.scheduler_class.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int | None = None) -> torch.Tensor:
        """[1, tokens, width] embeddings of ``prompt``, as the model's own diffusers pipeline makes them (padded to
        ``max_sequence_length`` tokens; None: ``WanPipeline.__call__``'s default; the built-in model: its
        tokenizer's length)."""
        if self.pipeline_class in DIFFUSERS_PIPELINES:
            if self._text_pipeline is None:
                from diffusers import WanPipeline

                self._text_pipeline = WanPipeline(
                    tokenizer=self.tokenizer,
                    text_encoder=self.text_encoder,
                    vae=self.vae,
                    scheduler=self.make_scheduler(),
                    transformer=self.first_expert,
                )
            embeds, _ = self._text_pipeline.encode_prompt(
                prompt=prompt,
                do_classifier_free_guidance=False,
                max_sequence_length=max_sequence_length or WAN_MAX_SEQUENCE_LENGTH,
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
        """(channels, height, width) of one latent frame: the VAE's ``z_dim`` channels for Wan's VAE (an I2V
        transformer takes more: the image conditioning's mask and latent, concatenated by its frame plan)."""
        factor = self.vae_scale_factor * int(self.first_expert.config.patch_size[1])
        if height % factor or width % factor:
            raise ValueError(
                f"height/width: {height}x{width} must be multiples of {factor} (VAE factor x patch size)"
            )
        factor = self.vae_scale_factor
        channels = self.vae.config.z_dim if self.causal_vae else self.transformer.config.in_channels
        return (channels, height // factor, width // factor)

    def condition_on_image(
        self, text, negative, image: str, height: int, width: int, block_frames: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """The encoded prompt (and negative prompt) with the image conditioning of blocks of ``block_frames``
        latent frames added (``pipelines.families.wan.image``): dicts the frame plan reads."""
        from pipelines.families.wan.image import image_conditioning

        if not self.takes_image:
            return super().condition_on_image(text, negative, image, height, width, block_frames)
        extra = image_conditioning(self, image, height, width, block_frames)
        text = {"text": text, **extra}
        return text, None if negative is None else {"text": negative, **extra}

    @torch.no_grad()
    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] latent frames -> [F, H, W, 3] uint8 video frames (a causal VAE: as if the
        block began the video, use ``block_decoder`` for the blocks of one video; the per-frame VAE: a few
        frames per call, ``pipelines.families.wan.per_frame``)."""
        if self.causal_vae:
            return self.block_decoder()(latent)
        from pipelines.families.wan.per_frame import decode_frames

        return decode_frames(self.vae, latent, self.vae_scale_factor)


def load_video_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> WanVideoPipeline:
    import transformers

    path = Path(path)
    index = check_video_dir(path)
    transformer, vae, text_encoder, tokenizer, scheduler_config, scheduler_class = load_video_parts(
        path, index, dtype, device
    )
    image_encoder = image_processor = None
    if has_component(index, "image_encoder"):  # Wan 2.1 I2V's CLIP vision model and its processor
        try:
            encoder_class = getattr(transformers, index["image_encoder"][1])
            image_encoder = encoder_class.from_pretrained(
                path / "image_encoder", dtype=parse_dtype(dtype), use_safetensors=True, local_files_only=True
            ).to(device).eval()
            processor_class = getattr(transformers, index["image_processor"][1])
            image_processor = processor_class.from_pretrained(path / "image_processor", local_files_only=True)
        except (AttributeError, OSError, TypeError, ValueError) as err:
            raise ModelDirectoryError(f"could not load the video pipeline at {path}: {err}") from err
    if has_component(index, "transformer_2"):
        from pipelines.families.wan.experts import WanExperts

        boundary = float(index["boundary_ratio"]) * int(scheduler_config.get("num_train_timesteps", 1000))
        transformer = WanExperts(transformer, load_model(path / "transformer_2", dtype, device), boundary)
    return WanVideoPipeline(
        transformer,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config,
        scheduler_class,
        pipeline_class=index["_class_name"],
        expand_timesteps=bool(index.get("expand_timesteps", False)),
        image_encoder=image_encoder,
        image_processor=image_processor,
    )
