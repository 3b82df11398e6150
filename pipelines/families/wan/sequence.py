"""The Wan family's whole-video plan: ``WanTransformer3DModel``'s own forward on the whole video, for sequence
parallelism and for row bands.

diffusers ships ``WanTransformer3DModel._cp_plan``: it splits the video tokens at the first block and the
rotary embedding beside them, keeps the prompt whole (every worker's cross-attention sees all of it: under
Ulysses each prompt key then arrives once per worker, which leaves softmax attention's result unchanged) and
gathers ``proj_out``'s output, so under ``parallel.sequence.parallelize_sequence`` every worker calls the model's
forward on the whole latent and gets the whole output. Under the family's patch plan
(``pipelines.families.wan.patch``) the same forward takes a band of rows of every frame instead
(``pipelines.whole_video.BandSplit`` slices and gathers). Nothing of the model is replaced here:
``WanSequenceAdapter`` is the call ``WanPipeline.__call__`` makes, as the frame pipeline's one layer.

Wan 2.2's two experts and image-to-video (``WanImageToVideoPipeline``) take both plans too: the step's
expert is diffusers' boundary rule (``WanExperts.expert``; each expert is under context parallelism,
``WanFamily.whole_video_modules``), and an image-to-video forward is the I2V pipeline's call: the whole video's
conditioning channels (mask and image latent, ``image.image_conditioning``'s ``first``: the one block's) appended
to the latent, Wan 2.1's CLIP image embeddings as ``encoder_hidden_states_image``. The plan splits the tokens after
the patch embedding, so neither needs more. TI2V image-to-video (``expand_timesteps``) holds the first latent frame at
the image's in the model's input and passes a per-token timestep, that frame's tokens at 0, as
``WanImageToVideoPipeline`` does (``image.hold_first_frame``, ``image.first_frame_at_zero``): the ``_cp_plan`` splits
that timestep with the tokens, and under bands it is built from the band's own latent. Under the band plan each expert is patched on its own
(``WanFamily.whole_video_modules``), and an image's conditioning channels are cut to the worker's band of rows
with its latent (``band_conditions``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers import WanTransformer3DModel

from parallel.patch.bands import Bounds, slice_band
from pipelines.families.wan.experts import WanExperts
from pipelines.families.wan.image import first_frame_at_zero, hold_first_frame
from pipelines.whole_video import WholeInputs, WholeVideoAdapter, expand_timestep


@dataclass
class WanWholeInputs(WholeInputs):
    """A Wan step's inputs besides the latent: the step's expert, and an image-to-video render's image."""

    expert: WanTransformer3DModel | None = None
    """The transformer of this step (a two-expert pipeline's expert of its timestep)."""
    image: torch.Tensor | None = None
    """Wan 2.1 I2V: the CLIP image embeddings (``encoder_hidden_states_image``)."""
    frame_condition: torch.Tensor | None = None
    """Image-to-video: [B, 4 + z_dim, F, H, W] mask and image latent, appended to the latent's channels."""
    first_latent: torch.Tensor | None = None
    """TI2V image-to-video (``expand_timesteps``): the image's [B, z_dim, 1, H, W] latent, which the video's first latent
    frame is held at, its tokens at timestep 0."""


class WanSequenceAdapter(WholeVideoAdapter):
    """``WanTransformer3DModel``'s forward (a two-expert pipeline's expert of the step) on a whole video of latent
    shape [C, F, H, W] (the hidden states are the latent itself), as the frame pipeline's one layer."""

    def __init__(
        self, model: WanTransformer3DModel | WanExperts, block_shape: tuple[int, int, int, int], context_frames: int = 0
    ) -> None:
        if not isinstance(model, (WanTransformer3DModel, WanExperts)):
            raise TypeError(f"model: the Wan whole-video plan drives WanTransformer3DModel, got {type(model).__name__}")
        super().__init__(model, block_shape, context_frames)
        self.first_latent: torch.Tensor | None = None
        """TI2V image-to-video: the image's latent [1, z_dim, 1, H, W] the video ends with (``finish_latent``)."""

    def conditions(self, timestep: torch.Tensor, text: torch.Tensor | dict[str, torch.Tensor]) -> WanWholeInputs:
        """The step's timestep per batch row and expert; ``text`` one tensor, or the image-to-video dict
        (``pipelines.families.wan.image``: ``text``, ``first``, ``rest`` and Wan 2.1's ``image``, or TI2V's
        ``first_latent``)."""
        entries = text if isinstance(text, dict) else {"text": text}
        expert = self.model.expert(timestep) if isinstance(self.model, WanExperts) else self.model
        prompt, image, first = entries["text"], entries.get("image"), entries.get("first")
        first_latent = entries.get("first_latent")
        if first_latent is not None:
            self.first_latent = first_latent[:1]
        return WanWholeInputs(
            expand_timestep(timestep, prompt.shape[0]),
            prompt.to(self.dtype),
            expert,
            None if image is None else image.to(self.dtype),
            None if first is None else first.to(self.dtype),
            first_latent,
        )

    def embed(self, latent: torch.Tensor, cond: WanWholeInputs | None = None) -> torch.Tensor:
        """The latent in the model's dtype; TI2V image-to-video's with its first latent frame the image's, as
        ``WanImageToVideoPipeline`` builds its model input each step (before the cast)."""
        if cond is not None and cond.first_latent is not None:
            latent = hold_first_frame(latent, cond.first_latent)
        return super().embed(latent, cond)

    def finish_latent(self, block: int, latent: torch.Tensor) -> torch.Tensor:
        """The finished video with its first latent frame the image's, as ``WanImageToVideoPipeline`` ends under
        ``expand_timesteps`` (that frame's own steps fed nothing: the model's input held it)."""
        return latent if self.first_latent is None else hold_first_frame(latent, self.first_latent)

    def band_conditions(self, cond: WanWholeInputs, bounds: Bounds, rank: int) -> WanWholeInputs:
        """Image-to-video under bands: the conditioning channels of this worker's rows, as its latent band."""
        if cond.frame_condition is None:
            return cond
        return replace(cond, frame_condition=slice_band(cond.frame_condition, bounds, rank).contiguous())

    def forward(self, hidden: torch.Tensor, cond: WanWholeInputs) -> torch.Tensor:
        """``WanPipeline.__call__``'s transformer call (``WanImageToVideoPipeline``'s for an image)."""
        if cond.frame_condition is not None:
            hidden = torch.cat([hidden, cond.frame_condition], dim=1)
        timestep = cond.timestep
        if cond.first_latent is not None:  # TI2V: per token, of this forward's latent (under bands, the band's)
            timestep = first_frame_at_zero(timestep, hidden.shape, cond.expert.config.patch_size)
        return cond.expert(
            hidden_states=hidden,
            timestep=timestep,
            encoder_hidden_states=cond.text,
            encoder_hidden_states_image=cond.image,
            return_dict=False,
        )[0]

