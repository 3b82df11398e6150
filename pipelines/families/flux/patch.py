"""The Flux family's patch plan: diffusers' ``FluxTransformer2DModel`` on row bands.

The family's ``denoise`` packs a band of latent rows (a multiple of 2 high) into 2x2 patches, so a band's
tokens are a contiguous run of the whole image's token sequence, and passes the whole image's position ids
(``img_ids``, as FluxPipeline makes them). The transformer takes packed tokens, so the runtime learns the band
geometry in tokens (``PatchPlan.input_align``): ``rt.bounds[rank]`` is this band's token range. What makes a
band's output exact:

- ``x_embedder``, the adaLN modulations, the feed-forwards, ``norm_out`` and ``proj_out`` are per token: local;
- the text tokens are whole on every worker (the text stream and its ids are not banded);
- the rotary embedding (``pos_embed``) is computed for the text ids and this band's rows of the image ids, so
  the band's tokens rotate with their positions in the whole image;
- joint attention (double-stream blocks: text and image streams; single-stream blocks: their concatenation)
  takes its queries from the text and this band's image tokens, and its keys and values from the text and
  every band's image tokens, gathered point to point (``gather_band_kv``) and concatenated in band order, which
  is the whole sequence's order: text first, then the image in raster order.

``kv_source="kv"`` exchanges each band's image K and V (after RMSNorm and rotary); ``"input"`` exchanges the
attention's image input (``dim`` wide, half of K and V) and every band projects, normalises and rotates all
bands' keys and values itself, with the whole image's rotary positions. Both are exchanged by the generic
band processor's ``gather_tokens`` (``parallel.patch.attention``), which ``FluxBandAttnProcessor`` extends.
Displaced mode (DistriFusion) uses the previous step's K/V (or inputs) of the other bands; the text stream
then differs a little between workers, since each worker's text tokens see its own fresh band and the
others' stale ones.

The caller slices the band of the unpacked latent (``slice_band(latent, bounds, rank)``, rows at dim -2,
``band_bounds(rows, world, align=2)``) and gathers the unpacked outputs (``gather_bands``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from diffusers import FluxTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, _get_qkv_projections
from torch import nn

from parallel.patch.attention import BandSelfAttnProcessor
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, parallelize_patch, require_input_dims
from parallel.patch.runtime import PatchHandle, PatchRuntime
from parallel.patch.swap import install_processor, replace_forward

PACKING = 2
"""Latent rows per token row (FluxPipeline's 2x2 packing): the bands' row alignment."""
TEXT_TOKENS = "flux_text_tokens"
"""``rt.remember`` key of this forward's text token count (``txt_ids``' length)."""
IMAGE_ROPE = "flux_image_rope"
"""``rt.remember`` key of the whole image's rotary (cos, sin), kept when bands exchange attention inputs."""


class FluxBandAttnProcessor(BandSelfAttnProcessor):
    """``FluxAttnProcessor`` on the text and a band of image tokens, with every band's image keys and values
    (the generic band processor's ``gather_tokens``, in band order)."""

    _parallel_config = None

    def __init__(self, rt: PatchRuntime, layer: int, attention_backend: str | None = None):
        super().__init__(rt, layer)
        self._attention_backend = attention_backend

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise NotImplementedError("patch-parallel Flux attention does not support an attention mask")
        # single-stream blocks pass text and image as one sequence; double-stream ones the text apart
        if encoder_hidden_states is None:
            text = self.rt.recall(TEXT_TOKENS)
            image_input = hidden_states[:, text:]
        else:
            text = encoder_hidden_states.shape[1]
            image_input = hidden_states
        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
            encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if self.send_inputs:
            image_key, image_value = self.project_all_bands(attn, image_input)
        else:
            image_key, image_value = self.gather_kv(key[:, text:], value[:, text:])
        key = torch.cat([key[:, :text], image_key], dim=1)
        value = torch.cat([value[:, :text], image_value], dim=1)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=None, backend=self._attention_backend, parallel_config=None
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [text, hidden_states.shape[1] - text], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
        return hidden_states, encoder_hidden_states

    def gather_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This band's image K and V (B, band tokens, heads, head_dim) -> every band's, in token order."""
        return self.gather_tokens(torch.cat([key, value], dim=-1)).split(key.shape[-1], dim=-1)

    def project_all_bands(
        self, attn: FluxAttention, image_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every band's image attention input, gathered, projected to K and V as this band projects its own, and
        rotated with the whole image's positions."""
        tokens = self.gather_tokens(image_input)
        if attn.fused_projections:
            _, key, value = attn.to_qkv(tokens).chunk(3, dim=-1)
        else:
            key, value = attn.to_k(tokens), attn.to_v(tokens)
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        key = apply_rotary_emb(key, self.rt.recall(IMAGE_ROPE), sequence_dim=1)
        return key, value


def patch_flux_rope(pos_embed: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``pos_embed`` (given the text ids and the whole image's ids) return the rotary embedding of the text
    and this band's image tokens; with ``kv_source="input"`` it also keeps the whole image's for the K/V of the
    other bands."""
    cls_forward = type(pos_embed).forward

    def forward(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert rt.bounds is not None, "geometry is learned in the model's forward pre-hook"
        text = rt.recall(TEXT_TOKENS)
        image = rt.bounds[-1][1]
        if ids.shape[0] != text + image:
            raise ValueError(
                f"img_ids: the banded model takes the whole image's position ids ({image} tokens over the bands), "
                f"got {ids.shape[0] - text}"
            )
        first, end = rt.bounds[rt.rank]
        if rt.config.kv_source == "input":
            rt.remember(IMAGE_ROPE, cls_forward(pos_embed, ids[text:]))
        return cls_forward(pos_embed, torch.cat([ids[:text], ids[text + first : text + end]]))

    return replace_forward(pos_embed, forward)


def patch_flux_attention(attn: FluxAttention, rt: PatchRuntime) -> Callable[[], None]:
    """Install ``FluxBandAttnProcessor`` on ``attn``; returns the function restoring the old processor."""
    old = attn.processor
    if type(old).__name__ != "FluxAttnProcessor":
        raise NotImplementedError(
            f"Flux bands replace FluxAttnProcessor; this attention runs {type(old).__name__} (an IP adapter?)"
        )
    return install_processor(attn, FluxBandAttnProcessor(rt, rt.new_layer_id(), getattr(old, "_attention_backend", None)))


def remember_text_tokens(transformer: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Keep each forward's text token count, where the image tokens start in the joint sequence."""

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        txt_ids = kwargs.get("txt_ids")
        if txt_ids is None:
            raise ValueError(
                "txt_ids: the banded Flux transformer takes its inputs by keyword, as FluxPipeline passes them"
            )
        rt.remember(TEXT_TOKENS, txt_ids.shape[-2])

    return transformer.register_forward_pre_hook(pre_hook, with_kwargs=True).remove


def patch_flux_layers(transformer: nn.Module, rt: PatchRuntime) -> list[Callable[[], None]]:
    """The text token count, the rotary embedding and every block's joint attention."""
    undo = [remember_text_tokens(transformer, rt), patch_flux_rope(transformer.pos_embed, rt)]
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        undo.append(patch_flux_attention(block.attn, rt))
    return undo


def check_flux_input(args: tuple, kwargs: dict) -> None:
    """Bands take packed tokens (B, tokens, channels) by keyword, as FluxPipeline passes them."""
    require_input_dims(args, kwargs, 3, "packed (B, tokens, channels)")
    if (
        kwargs.get("controlnet_block_samples") is not None
        or kwargs.get("controlnet_single_block_samples") is not None
    ):
        raise NotImplementedError(
            "controlnet residuals are not banded: patch parallelism runs Flux without them"
        )


def flux_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    if not isinstance(transformer, FluxTransformer2DModel):
        raise TypeError(f"transformer: expected a FluxTransformer2DModel, got {type(transformer).__name__}")
    if getattr(transformer, "_parallel_config", None) is not None:
        raise RuntimeError("transformer: diffusers' enable_parallelism was already applied to this model")
    return PatchPlan(
        align=PACKING,
        input_name="hidden_states",
        patch_layers=patch_flux_layers,
        check_input=check_flux_input,
        input_align=1,
    )


def parallelize_flux_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a ``FluxTransformer2DModel`` run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band, by keyword:
    ``hidden_states`` = the band of the unpacked latent (rows ``bounds[rank]``, ``band_bounds(rows, world,
    align=2)``) packed with ``FluxPipeline._pack_latents``, ``img_ids`` = the whole image's ids, everything else
    unchanged. Works in place.
    """
    config = config or PatchConfig()
    return parallelize_patch(transformer, group, flux_patch_plan(transformer, config), config)
