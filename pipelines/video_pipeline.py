"""What a video family's ``load()`` returns: the one object a video render (``job=video``) talks to.

``runtime.jobs.video_session`` and ``cluster.jobs.video`` know a video model only through its family
(``pipelines.families``) and this protocol; they import no family and test no class name. Wan's
``pipelines.families.wan.loading.WanVideoPipeline`` (Wan 2.1 and the built-in video model) is one
implementation; ``VideoPipelineBase`` holds the defaults (today's behaviour) a family overrides.

Adding a video family (HunyuanVideo, LTX-Video, CogVideoX...)
--------------------------------------------------------------
Write ``pipelines/families/<name>/`` (see docs/ARCHITECTURE.md, "What to touch", "a video family"):

- ``__init__.py``: a ``ModelFamily`` subclass with ``job = "video"``, ``pipelines`` (the diffusers pipeline
  class names it serves), ``denoiser = "transformer"``, ``samplers = ()`` (a video renders with the scheduler
  its directory names), ``strategies`` (``"none"``, ``"frames"`` when it has a frame plan), and:
  ``check_dir(path, index)`` (JSON only: refuse what it cannot render, ``ModelDirectoryError``),
  ``max_stages(path)`` (transformer blocks), ``temporal_factor(path)`` (video frames per latent frame, from the
  VAE's config), ``video_error(path, spec)`` (a ``(field, why)`` for a render it refuses at submit, e.g. a
  temporal patch needing an even ``block_frames``; the default checks ``block_frames`` against the temporal
  factor), ``load(path, dtype, device)`` returning an object of this protocol, and
  ``frame_adapter(model, block_shape, context_frames)`` (its ``parallel.frames.adapter.FrameAdapter``).
- ``loading.py``: a subclass of ``VideoPipelineBase`` (a dataclass is convenient) with the members below.
- ``frames.py``: the ``FrameAdapter``: the transformer's forward cut into ``embed`` / ``conditions`` /
  ``run_layer`` / ``head`` (diffusers' modules called piecewise, never its forward copied), and an attention
  processor of its own that appends the neighbour blocks' edge K/V from ``adapter.cache`` to a block's K/V
  (video tokens only). A joint-attention model, whose blocks update the text tokens too (CogVideoX,
  HunyuanVideo's dual-stream blocks), carries them in the hidden states between stages: ``embed(latent,
  cond)`` receives the step's conditions to prepend them, ``hidden_shape(batch, cond)`` counts them, and
  ``head`` drops them.

The encoded prompt (``encode_prompt``) is one tensor [1, L, D] or a dict of batch-first tensors (embeddings,
attention mask, pooled projections: whatever the family's ``conditions`` needs). The frame pipeline batches
the negative prompt's entries first along dim 0 for classifier-free guidance, moves them to the model's
device, casts floating-point entries to the model's dtype (integer/boolean masks keep theirs) and hands that
same object to the adapter's ``conditions(timestep, text)``; ``timestep`` is ``timesteps[i]`` as a [1] tensor
(expand it to the batch in ``conditions``).

Guidance: ``conditioning(prompt, negative_prompt, guidance_scale)`` returns ``(text, negative, cfg_scale)``; the
frame pipeline runs both branches when ``cfg_scale > 1``. A guidance-distilled family (HunyuanVideo's embedded
guidance) puts the guidance value into its text dict (batch-first, e.g. ``{"guidance": tensor([g * 1000])}``)
and returns ``cfg_scale = 1.0``.

Sampler: ``set_timesteps(scheduler, steps, block_shape, device)`` sets a fresh scheduler's timesteps as the
family's diffusers pipeline does (flow matching: ``sigmas`` / ``mu`` / shift; LTX computes ``mu`` from the token
count; HunyuanVideo passes ``sigmas = linspace(1, 0, steps + 1)[:-1]``). ``block_shape`` is (C, F, h, w) of ONE
frame block: every block of a multi-block video uses the schedule its pipeline would use for a video of one
block's size, so all blocks share one list of timesteps (the queue needs that). ``scheduler_step(scheduler,
output, index, timesteps, latent)`` applies one step (CogVideoX's DPM scheduler keeps its previous prediction
as an attribute of the block's scheduler, which a checkpoint then carries). A stochastic scheduler's hook declares
a ``generator`` keyword and gets its block's own ``torch.Generator`` (seeded from the job's seed and the block,
its state checkpointed with the block's scheduler: ``parallel.frames.sampling``), which it hands to
``scheduler.step`` as the diffusers pipeline hands its ``generator``.

Image-to-video: a render with an ``image`` (the spec's field, a local file; ``ModelFamily.takes_image`` says at
submit which models need one) calls ``condition_on_image(text, negative, image, height, width, block_frames)``
after ``conditioning``; the family returns the encoded prompts with the image's conditioning in them (a dict
entry per tensor), which its frame adapter reads in ``conditions`` and ``embed``. ``begin_block`` comes before
``embed``, so an adapter knows whether the block it embeds is block 0, the one the conditioning frame belongs to.

Frames: a render's ``frames``, ``block_frames`` and ``context_frames`` count video frames; ``latent_frames``
divides them by ``temporal_factor`` (refusing a remainder, naming the field) and ``video_frames`` says how many
frames a number of latent frames decodes to (a causal VAE's first latent frame gives one frame: Wan's 4k+1).
One stage (stage 0, or the one the frame plan gives a causal VAE's decode; it sends the frames to stage 0)
decodes each finished block with ``block_decoder()`` (called on the blocks in order: a causal VAE
carries its cache across blocks; ``video_frames`` must count the frames each block decodes to, since the
receiving stage sizes each block's frames by it; ``runtime.jobs.video_state`` checkpoints a decoder's ``cache``/``first``
attributes, or asks its ``export_state()``/``load_state(state)`` when it has them, e.g. CogVideoX's nested
``conv_cache``); ``decode_block`` decodes one block on its own (a per-frame VAE's share of a block). A VAE
that keeps no state across blocks (its family's ``decode_context``: LTX-Video's, decoding each block in a window
of ``context`` latent frames each way; HunyuanVideo's, decoding the whole video's temporal tiles) holds a block's
frames back until the ``context`` latent frames after it are in, so a call may return fewer frames than its block, or more; ``decodable_latent_frames``
is the rule every stage counts them by. A family
whose VAE decodes frames apart says so (``frames_decode_apart``): on several stages each then decodes a share
of a block's frames with ``decode_block``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from pipelines.frame_counts import latent_frame_count

EncodedPrompt = torch.Tensor | dict[str, torch.Tensor]
"""A prompt as the family's frame adapter takes it: one [1, L, D] tensor or named batch-first tensors."""


def decodable_latent_frames(received: int, video_latent_frames: int | None, right: int) -> int:
    """How many of a video's first ``received`` latent frames a block decoder with ``right`` latent frames of
    context after each window can decode: all but the last ``right``, or all once the video's
    ``video_latent_frames`` are in (None: the length is not known, so nothing is held back)."""
    if video_latent_frames is None or received >= video_latent_frames:
        return received
    return max(0, received - right)


@runtime_checkable
class VideoPipeline(Protocol):
    """A loaded video model, in eval mode on one device."""

    transformer: torch.nn.Module
    """The video DiT the frame pipeline cuts into stages."""
    vae: torch.nn.Module
    """The VAE that decodes finished blocks (on the decoding stage)."""
    pipeline_class: str
    """model_index.json's ``_class_name``: how ``pipelines.families.family_of`` finds the family."""

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (1 for a per-frame VAE)."""

    def latent_frames(self, frames: int, field_name: str = "frames") -> int:
        """Latent frames for ``frames`` video frames (``latent_frame_count``); ValueError naming ``field_name``."""

    def video_frames(self, latent_frames: int) -> int:
        """Video frames ``latent_frames`` latent frames decode to."""

    def lead_latent_frames(self, latent_frames: int) -> int:
        """Latent frames a video of one block of ``latent_frames`` renders before its own and drops before decoding
        (CogVideoX 1.5 pads an odd count to its temporal patch, as ``CogVideoXPipeline`` does); 0 for most."""

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of one latent frame; ValueError naming height/width when they do not fit."""

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        """The prompt as the family's diffusers pipeline encodes it (its own ``encode_prompt``, by keyword)."""

    def conditioning(
        self,
        prompt: str,
        negative_prompt: str,
        guidance_scale: float,
        true_cfg_scale: float = 1.0,
        prompt_template: dict | None = None,
        max_sequence_length: int | None = None,
    ) -> tuple[EncodedPrompt, EncodedPrompt | None, float]:
        """(prompt, negative prompt or None, the classifier-free guidance weight the frame pipeline applies).
        ``true_cfg_scale``: the weight of a family whose ``guidance_scale`` is embedded in its model (HunyuanVideo's
        true CFG, with a negative prompt); the others' jobs leave it at 1. ``prompt_template``, ``max_sequence_length``:
        the pipeline's own arguments of those names, for a model that takes them (``ModelFamily.prompt_template``,
        ``ModelFamily.takes_sequence_length``); None: its defaults."""

    def make_scheduler(self) -> Any:
        """A fresh diffusers scheduler (one per frame block), its timesteps not yet set."""

    def set_timesteps(self, scheduler: Any, steps: int, block_shape: tuple[int, int, int, int], device: Any) -> None:
        """Set a fresh scheduler's timesteps for a video of one block's latent ``block_shape`` (C, F, h, w)."""

    def scheduler_step(
        self, scheduler: Any, output: torch.Tensor, index: int, timesteps: torch.Tensor, latent: torch.Tensor
    ) -> torch.Tensor:
        """One sampler step of a block: the guided model output at ``timesteps[index]`` -> the next latent."""

    def block_decoder(
        self, video_latent_frames: int | None = None, context: int | None = None
    ) -> Callable[[torch.Tensor], np.ndarray]:
        """A decoder of one video's finished blocks, called in block order: [1, C, F, h, w] -> uint8 frames. A VAE
        without state across blocks (its family's ``decode_context`` is not None) holds the last ``context`` latent
        frames received back until the video's ``video_latent_frames`` are in; a VAE with a cache ignores both."""

    @property
    def latent_dtype(self) -> torch.dtype | None:
        """The dtype the family's diffusers pipeline prepares its initial latents in (None: the transformer's)."""

    def decode_block(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, the block decoded on its own."""

    def guidance_schedule(self, spec: Any) -> Callable[[float], float] | None:
        """The guidance weight of a step by its timestep where the job's fields vary it as the family's pipeline does
        (Wan 2.2's ``guidance_scale_2`` below its experts' boundary, CogVideoX's ``use_dynamic_cfg``); None: the
        job's one weight at every step."""


class VideoPipelineBase:
    """The protocol's defaults: what the frame pipeline did before video families had a say."""

    def latent_frames(self, frames: int, field_name: str = "frames") -> int:
        """Latent frames for ``frames`` video frames (``pipelines.frame_counts.latent_frame_count`` at the VAE's
        ``temporal_factor``)."""
        return latent_frame_count(frames, self.temporal_factor, field_name)

    def lead_latent_frames(self, latent_frames: int) -> int:
        """None: every latent frame rendered is decoded."""
        return 0

    def guidance_schedule(self, spec: Any) -> Callable[[float], float] | None:
        """One weight at every step."""
        return None

    def conditioning(
        self,
        prompt: str,
        negative_prompt: str,
        guidance_scale: float,
        true_cfg_scale: float = 1.0,
        prompt_template: dict | None = None,
        max_sequence_length: int | None = None,
    ) -> tuple[EncodedPrompt, EncodedPrompt | None, float]:
        """The prompt, and with classifier-free guidance (``guidance_scale > 1``) the negative prompt, each
        through ``encode_prompt`` at ``max_sequence_length`` tokens (None: the pipeline's default); the guidance
        weight as given (``true_cfg_scale``, ``prompt_template``: not this family's, refused at submit)."""
        length = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
        text = self.encode_prompt(prompt, **length)
        negative = self.encode_prompt(negative_prompt, **length) if guidance_scale > 1.0 else None
        return text, negative, guidance_scale

    def set_timesteps(self, scheduler: Any, steps: int, block_shape: tuple[int, int, int, int], device: Any) -> None:
        """``scheduler.set_timesteps(steps, device=device)``."""
        from parallel.frames.sampling import default_set_timesteps

        default_set_timesteps(scheduler, steps, block_shape, device)

    def scheduler_step(
        self, scheduler: Any, output: torch.Tensor, index: int, timesteps: torch.Tensor, latent: torch.Tensor
    ) -> torch.Tensor:
        """``scheduler.step(output, timesteps[index], latent)``."""
        from parallel.frames.sampling import default_step

        return default_step(scheduler, output, index, timesteps, latent)

    def block_decoder(
        self, video_latent_frames: int | None = None, context: int | None = None
    ) -> Callable[[torch.Tensor], np.ndarray]:
        """Each block decoded on its own (a per-frame VAE: no cache, no context)."""
        return self.decode_block

    @property
    def latent_dtype(self) -> torch.dtype | None:
        """None: the initial latents in the transformer's first parameter's dtype (the built-in model's choice). A
        family whose diffusers pipeline prepares them in float32 under a half-precision model (Wan, HunyuanVideo,
        LTX-Video: ``prepare_latents(..., torch.float32, ...)``) says so: under bfloat16 the first steps would
        otherwise start from rounded noise (and LTX's stay in bfloat16 where diffusers' stay in float32)."""
        return None

    def condition_on_image(
        self, text: EncodedPrompt, negative: EncodedPrompt | None, image: str, height: int, width: int,
        block_frames: int,
    ) -> tuple[EncodedPrompt, EncodedPrompt | None]:
        """An image-to-video family adds the conditioning of ``image`` (a local file) to the encoded prompt and
        negative prompt, for frame blocks of ``block_frames`` latent frames; the default takes no image."""
        raise ValueError(f"image: this model ({type(self).__name__}) takes no image")

    @property
    def frames_decode_apart(self) -> bool:
        """Whether ``decode_block`` decodes every latent frame on its own (a per-frame VAE), so that the stages
        may each decode a share of a block's frames; False (a causal VAE: one stage, in order) unless a family
        says so."""
        return False
