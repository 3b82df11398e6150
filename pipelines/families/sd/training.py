"""A text-conditioned diffusers UNet (with its text encoder) as a flat list of layers for pipeline training.

DeepSpeed's PipelineModule runs a list of layers, each taking and returning one tuple of tensors, and cuts
it into stages. The UNet's skip connections cross the cut, so the tuple carries them:

    (noisy latent, timesteps, token ids)                       -> text encoder
    (noisy latent, timesteps, text embeddings)                 -> time embedding + conv_in
    (sample, time embedding, [text embeddings,] *skips)        -> down blocks, mid block, up blocks
    (sample,)                                                  -> norm + conv_out -> predicted noise

Down blocks append their residuals, up blocks pop the ones they use. DeepSpeed sends the gradient of every
float tensor a stage received back to the stage before it, so every float tensor in the tuple must be used
downstream: the text embeddings leave the carry after the last block with cross-attention, the time
embedding after the last up block, and integer tensors (timesteps, token ids) never need a gradient.

The layers hold the diffusers modules themselves (no copies), so after training the UNet and text encoder
objects carry the trained weights and save with `save_pretrained`.
"""

from __future__ import annotations

import torch
from torch import nn

from parallel.training.layers import Carry, packed


class TextEncoderLayer(nn.Module):
    """(latent, timesteps, token ids) -> (latent, timesteps, text embeddings), as diffusers' encode_prompt."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, inputs: Carry) -> Carry:
        latent, timesteps, token_ids = inputs
        embeds = self.text_encoder(token_ids)[0]
        return packed(latent, timesteps, embeds)


class TimeAndConvIn(nn.Module):
    """Timestep embedding and the input convolution; the conv output is also the first skip."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.time_proj = unet.time_proj
        self.time_embedding = unet.time_embedding
        self.conv_in = unet.conv_in

    def forward(self, inputs: Carry) -> Carry:
        latent, timesteps, embeds = inputs
        timesteps = timesteps.expand(latent.shape[0])
        temb = self.time_embedding(self.time_proj(timesteps).to(dtype=latent.dtype))
        sample = self.conv_in(latent)
        return packed(sample, temb, embeds, sample)


def _has_cross_attention(block: nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


class _BlockLayer(nn.Module):
    """A UNet block over the carry (sample, temb, [embeds,] *skips).

    The text embeddings are carried only up to the last block with cross-attention: past it nothing would
    give them a gradient. `embeds_in` says whether the carry arriving here holds them, `embeds_out` whether
    the carry leaving does.
    """

    def __init__(self, block: nn.Module, embeds_in: bool, embeds_out: bool) -> None:
        super().__init__()
        self.block = block
        self.embeds_in = embeds_in
        self.embeds_out = embeds_out
        if _has_cross_attention(block) and not embeds_in:
            raise ValueError("a cross-attention block placed after the text embeddings were dropped")

    def unpack(self, inputs: Carry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list]:
        sample, temb, *rest = inputs
        if self.embeds_in:
            embeds, *skips = rest
            return sample, temb, embeds, skips
        return sample, temb, None, rest

    def pack(self, sample: torch.Tensor, temb: torch.Tensor, embeds, skips) -> Carry:
        if self.embeds_out:
            return packed(sample, temb, embeds, *skips)
        return packed(sample, temb, *skips)

    def cross_kwargs(self, embeds) -> dict:
        return {"encoder_hidden_states": embeds} if _has_cross_attention(self.block) else {}


class DownLayer(_BlockLayer):
    """One down block; appends its residuals to the carried skips."""

    def forward(self, inputs: Carry) -> Carry:
        sample, temb, embeds, skips = self.unpack(inputs)
        sample, residuals = self.block(hidden_states=sample, temb=temb, **self.cross_kwargs(embeds))
        return self.pack(sample, temb, embeds, [*skips, *residuals])


class MidLayer(_BlockLayer):
    def forward(self, inputs: Carry) -> Carry:
        sample, temb, embeds, skips = self.unpack(inputs)
        sample = self.block(sample, temb, **self.cross_kwargs(embeds))
        return self.pack(sample, temb, embeds, skips)


class UpLayer(_BlockLayer):
    """One up block; pops the skips it concatenates. The last one returns the sample alone."""

    def __init__(self, block: nn.Module, embeds_in: bool, embeds_out: bool, last: bool) -> None:
        super().__init__(block, embeds_in, embeds_out)
        self.last = last

    def forward(self, inputs: Carry) -> Carry:
        sample, temb, embeds, skips = self.unpack(inputs)
        used = len(self.block.resnets)
        residuals, skips = tuple(skips[-used:]), skips[:-used]
        sample = self.block(
            hidden_states=sample,
            temb=temb,
            res_hidden_states_tuple=residuals,
            upsample_size=None,
            **self.cross_kwargs(embeds),
        )
        if self.last:
            if skips:
                raise RuntimeError(f"{len(skips)} skip tensors left unused after the last up block")
            return packed(sample)
        return self.pack(sample, temb, embeds, skips)


class ConvOut(nn.Module):
    """Output norm, activation and convolution: (sample,) -> predicted noise."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.norm = unet.conv_norm_out
        self.act = unet.conv_act
        self.conv = unet.conv_out

    def forward(self, inputs: Carry) -> torch.Tensor:
        (sample,) = inputs
        if self.norm is not None:
            sample = self.act(self.norm(sample))
        return self.conv(sample)


def unet_layers(unet: nn.Module, text_encoder: nn.Module | None = None) -> list[nn.Module]:
    """The UNet (preceded by its text encoder if given) as a list of tuple-in, tuple-out layers.

    Without a text encoder the first layer takes (latent, timesteps, text embeddings). Latent sizes must be
    multiples of 2^(number of downsamples): the layers do not forward odd upsample sizes.
    """
    if unet.config.get("class_embed_type") or unet.config.get("addition_embed_type"):
        raise ValueError("unet_layers: class or addition embeddings are not supported")
    layers: list[nn.Module] = [TextEncoderLayer(text_encoder)] if text_encoder is not None else []
    layers.append(TimeAndConvIn(unet))
    blocks = [("down", b) for b in unet.down_blocks]
    blocks += [("mid", unet.mid_block)] if unet.mid_block is not None else []
    blocks += [("up", b) for b in unet.up_blocks]
    cross = [i for i, (_, block) in enumerate(blocks) if _has_cross_attention(block)]
    last_cross = cross[-1] if cross else -1
    for i, (kind, block) in enumerate(blocks):
        embeds_in, embeds_out = i <= last_cross, i < last_cross
        if kind == "down":
            layers.append(DownLayer(block, embeds_in, embeds_out))
        elif kind == "mid":
            layers.append(MidLayer(block, embeds_in, embeds_out))
        else:
            layers.append(UpLayer(block, embeds_in, embeds_out, last=i == len(blocks) - 1))
    layers.append(ConvOut(unet))
    return layers
