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
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

from pipelines.whole_video import WholeInputs, WholeVideoAdapter


class WanSequenceAdapter(WholeVideoAdapter):
    """``WanTransformer3DModel``'s forward on a whole video of latent shape [C, F, H, W] (the hidden states are the
    latent itself), as the frame pipeline's one layer."""

    def __init__(
        self, model: WanTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int = 0
    ) -> None:
        if not isinstance(model, WanTransformer3DModel):
            raise TypeError(f"model: the Wan whole-video plan drives WanTransformer3DModel, got {type(model).__name__}")
        super().__init__(model, block_shape, context_frames)

    def forward(self, hidden: torch.Tensor, cond: WholeInputs) -> torch.Tensor:
        """``WanPipeline.__call__``'s transformer call."""
        return self.model(
            hidden_states=hidden, timestep=cond.timestep, encoder_hidden_states=cond.text, return_dict=False
        )[0]
