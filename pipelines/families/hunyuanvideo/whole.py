"""The HunyuanVideo family's whole-video plan: ``HunyuanVideoTransformer3DModel``'s own forward on the whole video,
as the frame pipeline's one layer, for row bands (``pipelines.families.hunyuanvideo.patch``; ``BandSplit`` in
``pipelines.whole_video`` slices the latent and gathers the outputs). Nothing of the model is replaced here: the
forward is the call ``HunyuanVideoPipeline.__call__`` makes.
"""

from __future__ import annotations

import torch
from diffusers import HunyuanVideoTransformer3DModel

from pipelines.whole_video import WholeInputs, WholeVideoAdapter, expand_timestep


class HunyuanWholeAdapter(WholeVideoAdapter):
    """``HunyuanVideoTransformer3DModel``'s forward on a whole video of latent shape [C, F, H, W]."""

    def __init__(
        self, model: HunyuanVideoTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int = 0
    ) -> None:
        if not isinstance(model, HunyuanVideoTransformer3DModel):
            raise TypeError(
                f"model: the HunyuanVideo whole-video plan drives HunyuanVideoTransformer3DModel, got "
                f"{type(model).__name__}"
            )
        super().__init__(model, block_shape, context_frames)

    def conditions(self, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> WholeInputs:
        """``text``: the pipeline's ``encode_prompt`` outputs and the embedded guidance, batch first
        (``loading.encode_prompt``); the timestep in the model's dtype, as ``HunyuanFrameAdapter.conditions`` says
        why."""
        batch = text["prompt_embeds"].shape[0]
        return WholeInputs(expand_timestep(timestep, batch).to(self.dtype), text)

    def forward(self, hidden: torch.Tensor, cond: WholeInputs) -> torch.Tensor:
        """``HunyuanVideoPipeline.__call__``'s transformer call."""
        text = cond.text
        return self.model(
            hidden_states=hidden,
            timestep=cond.timestep,
            encoder_hidden_states=text["prompt_embeds"],
            encoder_attention_mask=text["prompt_attention_mask"],
            pooled_projections=text["pooled_prompt_embeds"],
            guidance=text["guidance"],
            return_dict=False,
        )[0]
