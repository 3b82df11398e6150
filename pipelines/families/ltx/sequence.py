"""The LTX-Video family's sequence plan: the whole video as one sequence, split by diffusers' context parallelism.

diffusers ships ``LTXVideoTransformer3DModel._cp_plan``: it splits the video tokens, the prompt tokens and
the prompt's mask at the model's entry and the rotary embedding beside them, and gathers ``proj_out``'s
output, so under ``parallel.sequence.parallelize_sequence`` every worker calls the model's own ``forward`` on
the whole video and gets the whole output. ``LTXSequenceAdapter`` hands that forward to the frame pipeline as
one "layer" of a video of one block (``pipelines.whole_video.WholeVideoAdapter``; ``embed`` packs the latent,
``head`` unpacks), so a sequence-parallel render reuses the frame pipeline's loop, sampler hooks, checkpoints
and block writer with no stages.

One gap in diffusers 0.42 is filled here: Ulysses all-gathers a prompt mask split with the text, but
``LTXVideoAttnProcessor`` expands that mask to every attention head (``prepare_attention_mask``) while each
Ulysses worker attends with its share of the heads only, so the masked cross-attention fails on a shape
mismatch. ``MaskOnceAttnProcessor`` is LTX's processor with the mask kept as one row for all heads
([B, 1, 1, L], which broadcasts over any share of them); the rest of its call is diffusers' processor's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import LTXPipeline, LTXVideoTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor, apply_rotary_emb

from pipelines.families.ltx.frames import LTX_ROPE_SCALE
from pipelines.whole_video import WholeVideoAdapter, expand_timestep


class MaskOnceAttnProcessor(LTXVideoAttnProcessor):
    """LTXVideoAttnProcessor with the attention mask broadcast over the heads instead of repeated per head."""

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None
    ):
        if attention_mask is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb)
        batch = hidden_states.shape[0]
        attention_mask = attention_mask.reshape(batch, 1, 1, attention_mask.shape[-1])  # [B, 1, L] bias
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(context))
        value = attn.to_v(context)
        if image_rotary_emb is not None:
            query, key = apply_rotary_emb(query, image_rotary_emb), apply_rotary_emb(key, image_rotary_emb)
        out = dispatch_attention_fn(
            query.unflatten(2, (attn.heads, -1)),
            key.unflatten(2, (attn.heads, -1)),
            value.unflatten(2, (attn.heads, -1)),
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


@dataclass
class SequenceInputs:
    """What the model's forward takes besides the latent, for one step."""

    timestep: torch.Tensor
    """[B] the step's timestep, one per batch row."""
    text: torch.Tensor
    """[B, L, D] prompt embeddings (both guidance branches batched, negative first)."""
    mask: torch.Tensor | None
    """[B, L] the prompt's attention mask."""


class LTXSequenceAdapter(WholeVideoAdapter):
    """The model's own forward on a whole video of latent shape [C, F, H, W], as the frame pipeline's one layer."""

    def __init__(
        self,
        model: LTXVideoTransformer3DModel,
        block_shape: tuple[int, int, int, int],
        context_frames: int = 0,
        rope_interpolation_scale: tuple[float, float, float] = LTX_ROPE_SCALE,
    ) -> None:
        if not isinstance(model, LTXVideoTransformer3DModel):
            raise TypeError(
                f"model: the LTX sequence plan drives LTXVideoTransformer3DModel, got {type(model).__name__}"
            )
        super().__init__(model, block_shape, context_frames)
        self.rope_interpolation_scale = rope_interpolation_scale
        self._original = [block.attn2.processor for block in model.transformer_blocks]
        for block in model.transformer_blocks:
            block.attn2.set_processor(MaskOnceAttnProcessor())

    def remove(self) -> None:
        """Give the model its own cross-attention processors back."""
        for block, processor in zip(self.model.transformer_blocks, self._original):
            block.attn2.set_processor(processor)

    def embed(self, latent: torch.Tensor, cond: SequenceInputs | None = None) -> torch.Tensor:
        """[B, C, F, H, W] -> [B, tokens, C] LTX's packed latent (the model's forward embeds it)."""
        config = self.model.config
        return LTXPipeline._pack_latents(latent, config.patch_size, config.patch_size_t).to(
            self.model.proj_in.weight.dtype
        )

    def conditions(self, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> SequenceInputs:
        embeds = text["prompt_embeds"]
        return SequenceInputs(
            expand_timestep(timestep, embeds.shape[0]),
            embeds.to(self.model.proj_in.weight.dtype),
            text.get("prompt_attention_mask"),
        )

    def forward(self, hidden: torch.Tensor, cond: SequenceInputs) -> torch.Tensor:
        """The whole model: packed latent -> packed output."""
        return self.call_model(hidden, cond, *self.block_shape[1:])

    def call_model(self, packed: torch.Tensor, cond: SequenceInputs, frames: int, height: int, width: int) -> torch.Tensor:
        """``LTXPipeline.__call__``'s transformer call on ``packed`` tokens of a latent ``frames x height x width``."""
        return self.model(
            hidden_states=packed,
            encoder_hidden_states=cond.text,
            timestep=cond.timestep,
            encoder_attention_mask=cond.mask,
            num_frames=frames,
            height=height,
            width=width,
            rope_interpolation_scale=self.rope_interpolation_scale,
            return_dict=False,
        )[0]

    def head(self, hidden: torch.Tensor, cond: SequenceInputs) -> torch.Tensor:
        """[B, tokens, C] -> [B, C, F, H, W]."""
        _, frames, height, width = self.block_shape
        config = self.model.config
        return LTXPipeline._unpack_latents(
            hidden, frames, height, width, config.patch_size, config.patch_size_t
        ).float()  # as LTXPipeline.__call__: noise_pred.float() before guidance and the step

    def hidden_shape(self, batch: int = 1, cond: SequenceInputs | None = None) -> tuple[int, int, int]:
        channels, frames, height, width = self.block_shape
        return (batch, frames * height * width, channels)
