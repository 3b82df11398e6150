"""Self-attention on a band of tokens: local queries, keys and values from every band.

Installed as a diffusers attention processor on self-attention ``Attention`` modules only; cross
attention (``attn2``, text tokens) needs nothing from other bands and keeps its processor. The
processor follows diffusers' ``AttnProcessor2_0`` step by step, except that every band's tokens reach
the keys and values, exchanged with every other band point to point: either K and V (after ``norm_k``,
concatenated), or, with ``PatchConfig.kv_source="input"``, the attention's input tokens, which every
band then projects to K and V itself. Bands hold consecutive raster rows, so rank-ordered concatenation
is the full image's token order.

Displaced mode: this step's own K/V (or inputs) replace this rank's slot in the previous step's
gathered ones (other bands stale), and this step's gather is left in flight for the next step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import install_processor


def gather_band_kv(rt: PatchRuntime, key: tuple, kv: torch.Tensor) -> list[torch.Tensor]:
    """Every band's K/V, or attention input (dim 1 = this band's tokens), fresh in sync steps and the
    previous step's in displaced ones (this band's own always fresh), in band order; displaced steps send
    in ``rt.wire_dtype`` and the received parts come back in ``kv``'s dtype. ``key`` is ``("kv", layer id)``;
    the layer id tags the point-to-point messages."""
    sizes = rt.gathered_sizes(key, kv.shape[1], kv.device)
    wire = kv.to(rt.wire_dtype(kv.dtype))
    parts = list(
        rt.exchange(key, lambda: rt.comm.exchange_with_all(wire, sizes, 1, "kv", 2 * key[1]), activations=True)
    )
    parts = [None if p is None else p.to(kv.dtype) for p in parts]
    parts[rt.rank] = kv
    return parts


def gather_video_band_kv(rt: PatchRuntime, key: tuple, kv: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, band tokens, ...) -> (B, video tokens, ...) in the whole video's (frame, row, column) order, for a band
    that holds its rows of each of ``frames`` (token) frames: every band's part (``gather_band_kv``) is cut per
    frame and the frames' rows joined band after band."""
    if rt.world == 1:
        return kv
    batch = kv.shape[0]
    parts = [part.reshape(batch, frames, -1, *kv.shape[2:]) for part in gather_band_kv(rt, key, kv)]
    return torch.cat(parts, dim=2).flatten(1, 2)


class BandSelfAttnProcessor:
    """Attention processor for one self-attention layer of a patch-parallel model."""

    def __init__(self, rt: PatchRuntime, layer: int):
        self.rt = rt
        self.key = ("kv", layer)
        self.send_inputs = rt.config.kv_source == "input"

    def gather_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N_local, D) -> (B, N_total, D) in band order."""
        if self.rt.world == 1:
            return tokens
        return torch.cat(gather_band_kv(self.rt, self.key, tokens), dim=1)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise NotImplementedError(
                "BandSelfAttnProcessor is for self-attention (no encoder_hidden_states)"
            )
        if attention_mask is not None:
            raise NotImplementedError("patch-parallel self-attention does not support an attention mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if self.send_inputs:  # every band's tokens, projected here
            hidden_states = self.gather_tokens(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        inner = key.shape[-1]
        head_dim = inner // attn.heads

        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key.view(batch, -1, attn.heads, head_dim).transpose(1, 2))
            key = key.transpose(1, 2).reshape(batch, -1, inner)

        if not self.send_inputs:
            kv = self.gather_tokens(torch.cat([key, value], dim=-1))
            key, value = kv.split(inner, dim=-1)
        key = key.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def patch_self_attention(attn: Attention, rt: PatchRuntime) -> Callable[[], None]:
    """Install ``BandSelfAttnProcessor`` on ``attn``; returns the function that restores the old one."""
    return install_processor(attn, BandSelfAttnProcessor(rt, rt.new_layer_id()))


def is_self_attention(module: torch.nn.Module) -> bool:
    return isinstance(module, Attention) and not module.is_cross_attention
