"""A HunyuanVideoPipeline directory as a video render's model (``pipelines.video_pipeline.VideoPipeline``):
diffusers' pipeline, loaded whole, and what the frame pipeline asks of it.

The prompt goes through the pipeline's own ``encode_prompt`` (Llama under the pipeline's default prompt template,
hidden states two layers before the last, and CLIP's pooled output), called by keyword; the result is the dict of
batch-first tensors ``HunyuanFrameAdapter.conditions`` takes, with the embedded guidance
(``guidance_scale * 1000``, as ``HunyuanVideoPipeline.__call__`` makes it). The job's ``guidance_scale`` is that
embedded guidance: the distilled transformer takes it as an input, so the frame pipeline runs one branch, or two
under the pipeline's true classifier-free guidance (the job's ``true_cfg_scale`` above 1 with a
``negative_prompt``: both branches at the same embedded guidance, mixed by that weight). The sampler is the directory's
flow-matching Euler scheduler with the sigmas ``__call__`` passes (``linspace(1, 0, steps + 1)[:-1]``, through
diffusers' ``retrieve_timesteps``). The VAE packs 4 frames into a latent frame (8x8 pixels), so a render's
``frames`` count video frames as for Wan's 3-D VAE: ``frames`` latent-aligned frames decode to ``frames - 3``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.video_pipeline import VideoPipelineBase

HUNYUAN_PIPELINE = "HunyuanVideoPipeline"


def check_hunyuan_dir(path: Path, index: dict) -> None:
    """Refuse a HunyuanVideoPipeline directory the frame pipeline cannot render (JSON only)."""
    for component in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler"):
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
            raise ModelDirectoryError(f"{path}: a {HUNYUAN_PIPELINE} needs its {component} component, got {entry}")
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"{HUNYUAN_PIPELINE} {path} lacks component folder {component}/")
    if index["transformer"][1] != "HunyuanVideoTransformer3DModel":
        raise ModelDirectoryError(
            f"{path}: its transformer must be a HunyuanVideoTransformer3DModel, got {index['transformer'][1]}"
        )
    if index["vae"][1] != "AutoencoderKLHunyuanVideo":
        raise ModelDirectoryError(f"{path}: its vae must be an AutoencoderKLHunyuanVideo, got {index['vae'][1]}")


def pipeline_default(argument: str):
    """The default of one of ``HunyuanVideoPipeline.__call__``'s arguments (its guidance, its prompt length)."""
    from diffusers import HunyuanVideoPipeline

    return inspect.signature(HunyuanVideoPipeline.__call__).parameters[argument].default


def prompt_length() -> int:
    """Prompt tokens the transformer sees: ``HunyuanVideoPipeline.__call__``'s ``max_sequence_length`` (256), whatever
    the tokenizer's own ``model_max_length`` (fewer, as before, differed from the pipeline's output by 3e-2)."""
    return int(pipeline_default("max_sequence_length"))


@dataclass
class HunyuanVideoParts(VideoPipelineBase):
    """A loaded HunyuanVideoPipeline and what the frame pipeline asks of a video model."""

    pipe: object
    """diffusers' HunyuanVideoPipeline, in eval mode on one device."""
    pipeline_class: str = HUNYUAN_PIPELINE
    """model_index.json's _class_name (how ``family_of`` finds the family)."""

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def latent_dtype(self) -> torch.dtype:
        """float32 whatever the model's dtype: ``HunyuanVideoPipeline`` prepares its latents so."""
        return torch.float32

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame."""
        return int(self.pipe.vae_scale_factor_temporal)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial)

    def video_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames (the first one gives one frame)."""
        from pipelines.frame_counts import decoded_frame_count

        return decoded_frame_count(latent_frames, self.temporal_factor)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of one latent frame; the pipeline takes multiples of 16 pixels."""
        if height % 16 or width % 16:
            raise ValueError(f"height/width: {height}x{width} must be multiples of 16 for HunyuanVideo")
        factor = self.vae_scale_factor
        return (self.transformer.config.in_channels, height // factor, width // factor)

    # --- the prompt ------------------------------------------------------------------------------
    def max_sequence_length(self) -> int:
        """Prompt tokens kept (``prompt_length``)."""
        return prompt_length()

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str,
        guidance_scale: float | None = None,
        prompt_template: dict | None = None,
        max_sequence_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The prompt as ``HunyuanFrameAdapter.conditions`` takes it, batch of one, through the pipeline's own
        ``encode_prompt`` in ``prompt_template`` (None: the pipeline's default template) at ``max_sequence_length``
        tokens (None: the pipeline's default), with the embedded ``guidance_scale`` (None: the pipeline's
        default)."""
        if guidance_scale is None:
            guidance_scale = pipeline_default("guidance_scale")
        pipe = self.pipe
        device = pipe.text_encoder.device
        template = {} if prompt_template is None else {"prompt_template": prompt_template}
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=prompt, device=device, max_sequence_length=max_sequence_length or self.max_sequence_length(),
            **template,
        )
        dtype = self.transformer.dtype
        return {
            "prompt_embeds": embeds.to(dtype),
            "prompt_attention_mask": mask,
            "pooled_prompt_embeds": pooled.to(dtype),
            "guidance": torch.tensor([guidance_scale], dtype=dtype, device=device) * 1000.0,
        }

    def conditioning(
        self,
        prompt: str,
        negative_prompt: str,
        guidance_scale: float,
        true_cfg_scale: float = 1.0,
        prompt_template: dict | None = None,
        max_sequence_length: int | None = None,
    ):
        """The prompt with ``guidance_scale`` as its embedded guidance; with the pipeline's true CFG
        (``true_cfg_scale > 1`` and a negative prompt, as ``HunyuanVideoPipeline.__call__`` runs it) the negative
        prompt too, at the same embedded guidance, weighed by ``true_cfg_scale``; else no negative branch (weight 1).
        Both in ``prompt_template`` (None: the pipeline's default), as the pipeline encodes both."""
        text = self.encode_prompt(prompt, guidance_scale, prompt_template, max_sequence_length)
        if true_cfg_scale > 1.0 and negative_prompt:
            negative = self.encode_prompt(negative_prompt, guidance_scale, prompt_template, max_sequence_length)
            return text, negative, true_cfg_scale
        return text, None, 1.0

    # --- the sampler -----------------------------------------------------------------------------
    def make_scheduler(self):
        """A fresh scheduler of the directory's class and config (one per frame block)."""
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    def set_timesteps(self, scheduler, steps: int, block_shape: tuple, device) -> None:
        """The timesteps ``HunyuanVideoPipeline.__call__`` sets: its sigmas, then ``set_begin_index(0)``."""
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps

        retrieve_timesteps(scheduler, steps, device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
        scheduler.set_begin_index(0)

    def scheduler_step(self, scheduler, output: torch.Tensor, index: int, timesteps: torch.Tensor, latent: torch.Tensor):
        """One sampler step, as the pipeline's loop takes it."""
        return scheduler.step(output, timesteps[index], latent, return_dict=False)[0]

    # --- decoding --------------------------------------------------------------------------------
    def block_decoder(self, video_latent_frames: int | None = None, context: int | None = None):
        """A decoder of one video's finished blocks, called in block order: [1, C, F, h, w] -> uint8 frames of the
        whole decode's temporal tiles, the last ``context`` latent frames received held back until the video's
        ``video_latent_frames`` are in (``decode.HunyuanBlockDecoder``)."""
        from pipelines.families.hunyuanvideo.decode import HunyuanBlockDecoder

        return HunyuanBlockDecoder(self.vae, self.pipe.video_processor, video_latent_frames, context)

    @torch.no_grad()
    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8, as if the block began the video."""
        return self.block_decoder()(latent)


def load_hunyuan_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> HunyuanVideoParts:
    from pipelines.loading import load_pipeline

    return HunyuanVideoParts(load_pipeline(path, dtype, device))
