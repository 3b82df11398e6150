"""Diffusers' WanTransformer3DModel (with its text encoder) as a flat list of layers for pipeline training.

The video counterpart of pipelines/families/sd/training.py. DeepSpeed's PipelineModule runs tuple-in, tuple-out
layers and sends the gradient of every float tensor a stage received back to the stage before it, so only
tensors used downstream travel, and conditioning without a gradient travels as integers or is recomputed:

    (noisy latent, timesteps, token ids)                        -> patch embed + time conditioning
    (hidden, temb, timestep_proj, token ids, grid)              -> text encoder + text projection
    (hidden, temb, timestep_proj, text, grid)                   -> transformer block (x num_layers)
    (hidden, temb, grid)                                        -> output norm, projection, unpatchify

- The timesteps are float (flow matching's sigma * 1000) and are consumed by the first layer, which only
  the first stage runs on its loaded inputs: they never cross a cut. They are one per clip [B], or one per
  latent frame [B, frames] (then temb and timestep_proj are per token, as in diffusers' Wan 2.2 path), which
  trains context frames at another noise level than the frames they border (`dit.context_offset`).
- `grid` is an int64 tensor (frames, height, width) in patches: the rotary embedding carries no weights,
  so every block layer recomputes it from the grid instead of receiving it, and the head unpatchifies
  with it.
- The token ids are int64 until the text encoder turns them into the text embeddings every block's
  cross-attention uses; timestep_proj (every block's adaLN modulation) and the text leave the carry after
  the last block, temb (the head's modulation) after the head.

The layers hold the diffusers modules themselves (no copies): after training the transformer and text
encoder objects carry the trained weights and save with `save_pretrained`.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from parallel.training.layers import Carry, packed


def _rope(model: WanTransformer3DModel, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's 3-D rotary embedding for a (frames, height, width) patch grid (only shapes are read)."""
    p_t, p_h, p_w = model.config.patch_size
    frames, height, width = (int(v) for v in grid.tolist())
    probe = torch.empty(1, 0, frames * p_t, height * p_h, width * p_w, device=grid.device)
    return model.rope(probe)


class EmbedLayer(nn.Module):
    """(latent, timesteps, ids) -> (hidden, temb, timestep_proj, ids, grid): patch and time embeddings."""

    def __init__(self, model: WanTransformer3DModel) -> None:
        super().__init__()
        self.patch_embedding = model.patch_embedding
        # the time half of model.condition_embedder; its text projection belongs to TextLayer
        cond = model.condition_embedder
        self.timesteps_proj, self.time_embedder = cond.timesteps_proj, cond.time_embedder
        self.act_fn, self.time_proj = cond.act_fn, cond.time_proj
        self.patch_size = tuple(model.config.patch_size)

    def forward(self, inputs: Carry) -> Carry:
        latent, timesteps, ids = inputs
        _, _, frames, height, width = latent.shape
        p_t, p_h, p_w = self.patch_size
        grid = torch.tensor([frames // p_t, height // p_h, width // p_w], device=latent.device)
        hidden = self.patch_embedding(latent).flatten(2).transpose(1, 2)
        if timesteps.ndim < 2:
            levels = timesteps.expand(latent.shape[0])  # one level per clip
        else:  # [B, frames]: one noise level per latent frame, so one time embedding per token
            if p_t != 1 or timesteps.shape[1] != frames:
                raise ValueError(
                    f"timesteps: per-frame timesteps need temporal patch size 1 and one per latent frame; got "
                    f"{tuple(timesteps.shape)} for {frames} frames, patch {self.patch_size}"
                )
            levels = timesteps.repeat_interleave((height // p_h) * (width // p_w), dim=1)  # [B, tokens]
        steps = self.timesteps_proj(levels.flatten())
        temb = self.time_embedder(steps.to(hidden.dtype)).type_as(hidden)
        timestep_proj = self.time_proj(self.act_fn(temb)).unflatten(1, (6, -1))
        if levels.ndim == 2:
            temb, timestep_proj = temb.unflatten(0, levels.shape), timestep_proj.unflatten(0, levels.shape)
        return packed(hidden, temb, timestep_proj, ids, grid)


class TextLayer(nn.Module):
    """Token ids -> the text encoder's last hidden state -> the transformer's text projection."""

    def __init__(self, model: WanTransformer3DModel, text_encoder: nn.Module | None) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.text_embedder = model.condition_embedder.text_embedder

    def forward(self, inputs: Carry) -> Carry:
        hidden, temb, timestep_proj, ids, grid = inputs
        embeds = self.text_encoder(ids)[0] if self.text_encoder is not None else ids
        return packed(hidden, temb, timestep_proj, self.text_embedder(embeds), grid)


class BlockLayer(nn.Module):
    """One WanTransformerBlock; the last one drops timestep_proj and the text, which nothing after it uses."""

    def __init__(self, model: WanTransformer3DModel, index: int) -> None:
        super().__init__()
        self.block = model.blocks[index]
        self.last = index == len(model.blocks) - 1
        self._model = [model]  # for its rotary embedding; a list keeps it out of this layer's parameters

    def forward(self, inputs: Carry) -> Carry:
        hidden, temb, timestep_proj, text, grid = inputs
        hidden = self.block(hidden, text, timestep_proj, _rope(self._model[0], grid))
        if self.last:
            return packed(hidden, temb, grid)
        return packed(hidden, temb, timestep_proj, text, grid)


class HeadLayer(nn.Module):
    """(hidden, temb, grid) -> [B, C, F, H, W]: output norm with adaLN shift/scale, projection, unpatchify."""

    def __init__(self, model: WanTransformer3DModel) -> None:
        super().__init__()
        self.norm_out = model.norm_out
        self.proj_out = model.proj_out
        self.scale_shift_table = model.scale_shift_table
        self.patch_size = tuple(model.config.patch_size)

    def forward(self, inputs: Carry) -> torch.Tensor:
        hidden, temb, grid = inputs
        if temb.ndim == 3:  # one modulation per token (per-frame timesteps), as diffusers' Wan 2.2 path
            shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = self.proj_out(hidden)
        frames, height, width = (int(v) for v in grid.tolist())
        p_t, p_h, p_w = self.patch_size
        hidden = hidden.reshape(hidden.shape[0], frames, height, width, p_t, p_h, p_w, -1)
        return hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def wan_layers(model: WanTransformer3DModel, text_encoder: nn.Module | None = None) -> list[nn.Module]:
    """The transformer (its text encoder run after the patch embedding, if given) as tuple-in, tuple-out layers.

    Without a text encoder the first layer's third input is the text encoder's output (float embeddings)
    instead of token ids. Image-conditioned Wan models (I2V) are refused.
    """
    if not isinstance(model, WanTransformer3DModel):
        raise TypeError(f"model: wan_layers takes a WanTransformer3DModel, got {type(model).__name__}")
    if model.config.image_dim is not None or model.config.added_kv_proj_dim is not None:
        raise ValueError("model: image-conditioned Wan models (I2V) are not supported by wan_layers")
    layers: list[nn.Module] = [EmbedLayer(model), TextLayer(model, text_encoder)]
    layers += [BlockLayer(model, i) for i in range(len(model.blocks))]
    layers.append(HeadLayer(model))
    return layers
