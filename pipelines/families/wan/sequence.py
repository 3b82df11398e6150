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
the patch embedding, so neither needs more. Under the band plan each expert is patched on its own
(``WanFamily.whole_video_modules``), and an image's conditioning channels are cut to the worker's band of rows
with its latent (``band_conditions``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers import WanTransformer3DModel

from parallel.patch.bands import Bounds, slice_band
from pipelines.families.wan.experts import WanExperts
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


class WanSequenceAdapter(WholeVideoAdapter):
    """``WanTransformer3DModel``'s forward (a two-expert pipeline's expert of the step) on a whole video of latent
    shape [C, F, H, W] (the hidden states are the latent itself), as the frame pipeline's one layer."""

    def __init__(
        self, model: WanTransformer3DModel | WanExperts, block_shape: tuple[int, int, int, int], context_frames: int = 0
    ) -> None:
        if not isinstance(model, (WanTransformer3DModel, WanExperts)):
            raise TypeError(f"model: the Wan whole-video plan drives WanTransformer3DModel, got {type(model).__name__}")
        super().__init__(model, block_shape, context_frames)

    def conditions(self, timestep: torch.Tensor, text: torch.Tensor | dict[str, torch.Tensor]) -> WanWholeInputs:
        """The step's timestep per batch row and expert; ``text`` one tensor, or the image-to-video dict
        (``pipelines.families.wan.image``: ``text``, ``first``, ``rest`` and Wan 2.1's ``image``)."""
        entries = text if isinstance(text, dict) else {"text": text}
        expert = self.model.expert(timestep) if isinstance(self.model, WanExperts) else self.model
        prompt, image, first = entries["text"], entries.get("image"), entries.get("first")
        return WanWholeInputs(
            expand_timestep(timestep, prompt.shape[0]),
            prompt.to(self.dtype),
            expert,
            None if image is None else image.to(self.dtype),
            None if first is None else first.to(self.dtype),
        )

    def band_conditions(self, cond: WanWholeInputs, bounds: Bounds, rank: int) -> WanWholeInputs:
        """Image-to-video under bands: the conditioning channels of this worker's rows, as its latent band."""
        if cond.frame_condition is None:
            return cond
        return replace(cond, frame_condition=slice_band(cond.frame_condition, bounds, rank).contiguous())

    def forward(self, hidden: torch.Tensor, cond: WanWholeInputs) -> torch.Tensor:
        """``WanPipeline.__call__``'s transformer call (``WanImageToVideoPipeline``'s for an image)."""
        if cond.frame_condition is not None:
            hidden = torch.cat([hidden, cond.frame_condition], dim=1)
        return cond.expert(
            hidden_states=hidden,
            timestep=cond.timestep,
            encoder_hidden_states=cond.text,
            encoder_hidden_states_image=cond.image,
            return_dict=False,
        )[0]
