"""The CogVideoX family's whole-video plan: ``CogVideoXTransformer3DModel``'s own forward on the whole video, as the
frame pipeline's one layer, for row bands (``pipelines.families.cogvideox.patch``; ``BandSplit`` in
``pipelines.whole_video`` slices the latent and gathers the outputs). Nothing of the model is replaced here: the
forward is the call ``CogVideoXPipeline.__call__`` makes, on its (B, F, C, H, W) layout, with the rotary table it
prepares for the whole video.
"""

from __future__ import annotations

import torch
from diffusers import CogVideoXTransformer3DModel

from pipelines.families.cogvideox.frames import rotary_embedding
from pipelines.whole_video import WholeInputs, WholeVideoAdapter


class CogVideoXWholeAdapter(WholeVideoAdapter):
    """``CogVideoXTransformer3DModel``'s forward on a whole video of latent shape [C, F, H, W]."""

    output_dtype = torch.float32
    """``head`` upcasts the noise prediction, as ``CogVideoXPipeline.__call__`` does before guidance and its step."""

    def __init__(
        self, model: CogVideoXTransformer3DModel, block_shape: tuple[int, int, int, int], context_frames: int = 0
    ) -> None:
        if not isinstance(model, CogVideoXTransformer3DModel):
            raise TypeError(
                f"model: the CogVideoX whole-video plan drives CogVideoXTransformer3DModel, got {type(model).__name__}"
            )
        super().__init__(model, block_shape, context_frames)
        _, frames, height, width = block_shape
        self.rope = None
        if model.config.use_rotary_positional_embeddings:
            self.rope = rotary_embedding(model, height, width, frames, next(model.parameters()).device)

    def embed(self, latent: torch.Tensor, cond: WholeInputs | None = None) -> torch.Tensor:
        """[B, C, F, H, W] -> CogVideoX's [B, F, C, H, W] in the model's dtype (rows stay dim -2 for the bands)."""
        return latent.transpose(1, 2).to(self.dtype)

    def forward(self, hidden: torch.Tensor, cond: WholeInputs) -> torch.Tensor:
        """``CogVideoXPipeline.__call__``'s transformer call."""
        return self.model(
            hidden_states=hidden,
            encoder_hidden_states=cond.text,
            timestep=cond.timestep,
            image_rotary_emb=self.rope,
            return_dict=False,
        )[0]

    def head(self, hidden: torch.Tensor, cond: WholeInputs) -> torch.Tensor:
        """[B, F, C, H, W] -> [B, C, F, H, W], upcast as the pipeline's ``noise_pred.float()``."""
        return hidden.transpose(1, 2).float().contiguous()
