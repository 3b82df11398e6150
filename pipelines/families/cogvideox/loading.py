"""Load a diffusers ``CogVideoXPipeline`` directory (CogVideoX 1.0 and 1.5 text-to-video) as a video pipeline.

T5 text encoder, ``CogVideoXTransformer3DModel``, ``AutoencoderKLCogVideoX`` and the scheduler the directory
names (``CogVideoXDDIMScheduler`` or ``CogVideoXDPMScheduler`` as the released models ship, or any other diffusers
scheduler, such as the ``DDIMScheduler`` of diffusers' own tests). Everything model-specific is diffusers' own:
the prompt goes through ``CogVideoXPipeline.encode_prompt`` (by keyword, ``max_sequence_length`` as the
pipeline's ``__call__`` takes it by default, ``prompt_tokens``), the timesteps through
``scheduler.set_timesteps(steps, device=...)`` as ``retrieve_timesteps`` does, and a step through
``scheduler.step`` exactly as ``CogVideoXPipeline.__call__`` calls it (the DPM scheduler's extra arguments below).

Frames: the VAE packs 4 video frames into one latent frame and, like ``AutoencoderKLCogVideoX._decode``, the
block decoder (``pipelines.families.cogvideox.decode``) decodes latent frames in pairs carrying diffusers' own
``conv_cache`` from pair to pair and block to block, so each pair of latent frames becomes 8 video frames and
the streamed blocks equal ``vae.decode`` of the whole latent video. So ``frames`` video frames are
``frames / 4`` latent frames (a multiple of 4, as for Wan) and decode to exactly ``frames`` frames; a block must
hold an even number of latent frames (``block_frames`` a multiple of 8; CogVideoX 1.5's temporal patch needs
that anyway). Unlike Wan there is no lone first frame in a stream of even blocks: diffusers' CogVideoX pipelines
render 4k+1 frames (odd latent counts, 13 or 21) by decoding an odd first chunk of 3 latent frames. A video of one
block takes such a count as the pipeline does: 1.0's 49 frames from 13 latent frames; 1.5's 81 from 22 rendered,
the first dropped before decoding (``lead_latent_frames``).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.errors import ModelDirectoryError
from pipelines.frame_counts import decoded_frame_count, lead_frames
from pipelines.loading import check_pipeline_dir, load_video_parts
from pipelines.video_pipeline import VideoPipelineBase

REQUIRED = {
    "transformer": ("CogVideoXTransformer3DModel",),
    "vae": ("AutoencoderKLCogVideoX",),
}
DPM = "CogVideoXDPMScheduler"
OLD_PREDICTION = "frame_old_pred_original_sample"
"""The DPM scheduler's previous predicted original sample, kept on the block's scheduler (checkpointed with it)."""


def check_cogvideox_dir(path: str | Path, index: dict | None = None) -> dict:
    """Validate a CogVideoXPipeline directory from its JSON; returns its model_index.json."""
    path = Path(path)
    index = check_pipeline_dir(path) if index is None else index
    for component, class_names in REQUIRED.items():
        entry = index.get(component)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] not in class_names:
            raise ModelDirectoryError(
                f"{path} is not a CogVideoX pipeline: its {component} must be a {' or '.join(class_names)}, "
                f"got {entry}"
            )
    scheduler = index.get("scheduler")
    if not isinstance(scheduler, list) or len(scheduler) != 2 or not str(scheduler[1]).endswith("Scheduler"):
        raise ModelDirectoryError(f"{path} is not a CogVideoX pipeline: its scheduler must be a diffusers scheduler, "
                                  f"got {scheduler}")
    for component in ("text_encoder", "tokenizer", "scheduler"):
        if not (path / component).is_dir():
            raise ModelDirectoryError(f"CogVideoX pipeline {path} lacks component folder {component}/")
    config = json.loads((path / "transformer" / "config.json").read_text())
    if config.get("ofs_embed_dim"):
        raise ModelDirectoryError(f"{path}: CogVideoX image-to-video transformers (ofs_embed_dim) are not supported")
    if config.get("patch_size_t") and (
        not config.get("use_rotary_positional_embeddings") or config.get("use_learned_positional_embeddings")
    ):
        raise ModelDirectoryError(
            f"{path}: a CogVideoX transformer with a temporal patch (patch_size_t) runs only with rotary positional "
            "embeddings and no learned ones (diffusers' position table counts latent frames, not token frames)"
        )
    if config.get("in_channels") != config.get("out_channels"):
        raise ModelDirectoryError(
            f"{path}: the transformer's in_channels {config.get('in_channels')} differ from its out_channels "
            f"{config.get('out_channels')} (an image-conditioned CogVideoX), which text-to-video cannot render"
        )
    return index


def prompt_length(transformer_config) -> int:
    """Tokens a prompt is encoded to for a transformer of this config: ``CogVideoXPipeline.__call__``'s default
    ``max_sequence_length`` (226) for a transformer with rotary positions only, which takes any text length
    (CogVideoX 1.5's configs say 224 but the pipeline encodes 226); the transformer's ``max_text_seq_length`` when its
    patch embedding adds a sincos or learned position table built for exactly that many text tokens (the pipeline's
    default would fail there unless the two agree)."""
    import inspect

    from diffusers import CogVideoXPipeline

    from pipelines.families.cogvideox import rotary_only

    if rotary_only(transformer_config):
        return int(inspect.signature(CogVideoXPipeline.__call__).parameters["max_sequence_length"].default)
    return int(transformer_config.get("max_text_seq_length", 226))


@dataclass
class CogVideoXVideoPipeline(VideoPipelineBase):
    """The loaded parts of a CogVideoX pipeline, in eval mode on one device (a ``VideoPipeline``)."""

    transformer: torch.nn.Module
    """CogVideoXTransformer3DModel."""
    vae: torch.nn.Module
    """AutoencoderKLCogVideoX."""
    text_encoder: torch.nn.Module
    """T5 encoder."""
    tokenizer: object
    """Its tokenizer."""
    scheduler_config: dict
    """The scheduler's saved config (a fresh scheduler per frame block is made from it)."""
    scheduler_class: type
    """The directory's scheduler class (CogVideoXDDIMScheduler or CogVideoXDPMScheduler for the released models)."""
    pipeline_class: str = "CogVideoXPipeline"
    """model_index.json's _class_name."""
    _pipeline: object = field(default=None, repr=False)
    """diffusers' CogVideoXPipeline over these components, made on first use, for its encode_prompt."""

    @property
    def pipeline(self) -> Any:
        """diffusers' own ``CogVideoXPipeline`` over these components (its ``encode_prompt``)."""
        if self._pipeline is None:
            from diffusers import CogVideoXPipeline

            self._pipeline = CogVideoXPipeline(
                tokenizer=self.tokenizer,
                text_encoder=self.text_encoder,
                vae=self.vae,
                transformer=self.transformer,
                scheduler=self.make_scheduler(),
            )
        return self._pipeline

    def guidance_schedule(self, spec: Any) -> Callable[[float], float] | None:
        """The job's ``use_dynamic_cfg``: the weight at timestep ``t`` of ``steps`` is ``1 + guidance_scale * (1 -
        cos(pi * ((steps - t) / steps) ** 5)) / 2``, ``CogVideoXPipeline.__call__``'s rule as it stands (it reads the
        timestep, not the step index)."""
        if not getattr(spec, "use_dynamic_cfg", False):
            return None
        weight, steps = spec.guidance_scale, spec.steps
        return lambda timestep: 1 + weight * ((1 - math.cos(math.pi * ((steps - timestep) / steps) ** 5.0)) / 2)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def video_frames(self, latent_frames: int) -> int:
        """Each pair of latent frames decodes to ``2 * temporal_factor`` frames (``decode``); an odd count (a video of
        one odd block: the family refuses odd blocks in a video of several) decodes its first three latent frames as one
        chunk, the first of them to a single frame, as ``AutoencoderKLCogVideoX._decode`` does (diffusers' 49 frames
        from 13)."""
        return decoded_frame_count(latent_frames, self.temporal_factor, paired=True)

    def lead_latent_frames(self, latent_frames: int) -> int:
        """CogVideoX 1.5's temporal patch takes latent frames in pairs: ``CogVideoXPipeline.__call__`` pads an odd
        count with latent frames drawn at the front and drops them before decoding (81 frames: 22 latent frames
        rendered, 21 decoded). A video of one block does the same; the family refuses odd blocks otherwise."""
        return lead_frames(latent_frames, self.transformer.config.patch_size_t)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = self.vae_scale_factor * self.transformer.config.patch_size
        if height % factor or width % factor:
            raise ValueError(
                f"height/width: {height}x{width} must be multiples of {factor} (VAE factor x patch size)"
            )
        scale = self.vae_scale_factor
        return (self.transformer.config.in_channels, height // scale, width // scale)

    @property
    def prompt_tokens(self) -> int:
        """Tokens a prompt is encoded to (``prompt_length``)."""
        return prompt_length(self.transformer.config)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int | None = None) -> torch.Tensor:
        """[1, tokens, width] T5 embeddings, through ``CogVideoXPipeline.encode_prompt``: ``max_sequence_length``
        tokens (None: ``prompt_tokens``; the family refuses another length where a position table fixes it)."""
        embeds, _ = self.pipeline.encode_prompt(
            prompt=prompt,
            do_classifier_free_guidance=False,
            num_videos_per_prompt=1,
            max_sequence_length=max_sequence_length or self.prompt_tokens,
            device=self.text_encoder.device,
        )
        return embeds

    def make_scheduler(self) -> Any:
        return self.scheduler_class.from_config(self.scheduler_config)

    def scheduler_step(
        self,
        scheduler: Any,
        output: torch.Tensor,
        index: int,
        timesteps: torch.Tensor,
        latent: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One step as ``CogVideoXPipeline.__call__`` takes it (``eta=0``, its ``generator``): the DDIM scheduler's
        plain ``step``; the DPM scheduler's with the previous predicted original sample (kept on the block's
        scheduler) and the previous timestep. The step runs in diffusers' [B, F, C, H, W] layout, so a stochastic
        scheduler draws its noise in the order the pipeline does."""
        t, dtype = timesteps[index], latent.dtype
        output, latent = output.float().transpose(1, 2), latent.transpose(1, 2)
        if self.scheduler_class.__name__ != DPM:  # the pipeline's extra step arguments: those the step takes
            accepted = inspect.signature(scheduler.step).parameters
            extra = {name: value for name, value in (("eta", 0.0), ("generator", generator)) if name in accepted}
            latent = scheduler.step(output, t, latent, **extra, return_dict=False)[0]
        else:
            latent, old = scheduler.step(
                output,
                getattr(scheduler, OLD_PREDICTION, None),
                t,
                timesteps[index - 1] if index > 0 else None,
                latent,
                eta=0.0,
                generator=generator,
                return_dict=False,
            )
            setattr(scheduler, OLD_PREDICTION, old)
        return latent.transpose(1, 2).to(dtype).contiguous()  # the pipeline keeps its latents in the model's dtype

    def block_decoder(
        self, video_latent_frames: int | None = None, context: int | None = None, lead_frames: int = 0
    ):
        """A decoder of one video's finished blocks, called in block order (the causal VAE's ``conv_cache`` carries
        its state: no context), which drops the video's first ``lead_frames`` latent frames (``lead_latent_frames``)."""
        from pipelines.families.cogvideox.decode import CogVideoXBlockDecoder

        return CogVideoXBlockDecoder(self.vae, lead_frames)

    @torch.no_grad()
    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [4F, H, W, 3] uint8 frames, the block decoded as if it began the video."""
        return self.block_decoder()(latent)


def load_cogvideox_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> CogVideoXVideoPipeline:
    index = check_cogvideox_dir(path)
    return CogVideoXVideoPipeline(*load_video_parts(path, index, dtype, device), pipeline_class=index["_class_name"])
