"""The Qwen-Image family's patch plan: diffusers' ``QwenImageTransformer2DModel`` on row bands.

The family's ``denoise`` packs a band of latent rows (a multiple of 2 high) into 2x2 patches, so a band's tokens
are a contiguous run of the whole image's token sequence, and passes the whole image's shape (``img_shapes``, as
QwenImagePipeline makes them). The transformer takes packed tokens, so the runtime learns the band geometry in
tokens (``PatchPlan.input_align``): ``rt.bounds[rank]`` is this band's token range. What makes a band's output
exact:

- ``img_in``, ``txt_norm``/``txt_in``, the adaLN modulations, the feed-forwards, ``norm_out`` and ``proj_out``
  are per token: local;
- the text tokens are whole on every worker (the text stream and its mask are not banded);
- the rotary embedding (``pos_embed``, given the whole image's shape) keeps the text's frequencies, which start
  after the whole image's largest position, and this band's rows of the image's frequencies, so the band's tokens
  rotate with their positions in the whole image;
- joint attention (every block is dual-stream: text and image streams) takes its queries from the text and this
  band's image tokens, and its keys and values from the text and every band's image tokens, gathered point to
  point (``gather_band_kv``) and concatenated in band order, the whole image's raster order; a text mask (the
  padding of a shorter prompt batched beside a longer one) masks text keys only.

``kv_source="kv"`` exchanges each band's image K and V (after RMSNorm and rotary); ``"input"`` exchanges the
attention's image input (half of K and V) and every band projects, normalises and rotates all bands' keys and
values itself, with the whole image's rotary frequencies. Both go through the generic band processor's
``gather_tokens`` (``parallel.patch.attention``), which ``QwenBandAttnProcessor`` extends. Displaced mode
(DistriFusion) uses the previous step's K/V (or inputs) of the other bands; the text stream then differs a little
between workers, since each worker's text tokens see its own fresh band and the others' stale ones.

The caller slices the band of the unpacked latent (``slice_band(latent, bounds, rank)``, rows at dim -2,
``band_bounds(rows, world, align=2)``) and gathers the unpacked outputs (``gather_bands``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from diffusers import QwenImageTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen
from torch import nn

from parallel.patch.attention import BandSelfAttnProcessor
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan, parallelize_patch, require_input_dims
from parallel.patch.runtime import PatchHandle, PatchRuntime
from parallel.patch.swap import install_processor, replace_forward
from pipelines.families.qwenimage import PACKING, UNBANDED

IMAGE_ROPE = "qwenimage_image_rope"
"""``rt.remember`` key of the whole image's rotary frequencies, kept when bands exchange attention inputs."""


class QwenBandAttnProcessor(BandSelfAttnProcessor):
    """``QwenDoubleStreamAttnProcessor2_0`` on the text and a band of image tokens, with every band's image keys
    and values (the generic band processor's ``gather_tokens``, in band order)."""

    _parallel_config = None

    def __init__(self, rt: PatchRuntime, layer: int, attention_backend: str | None = None):
        super().__init__(rt, layer)
        self._attention_backend = attention_backend

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None:
            raise ValueError("QwenBandAttnProcessor requires encoder_hidden_states (the text stream)")
        if attention_mask is not None:
            raise ValueError(
                "attention_mask: Qwen-Image's joint mask is built from encoder_hidden_states_mask"
            )
        head_dim = attn.inner_dim // attn.heads
        image_input = hidden_states
        img_query = attn.to_q(hidden_states).unflatten(-1, (-1, head_dim))
        img_key = attn.to_k(hidden_states).unflatten(-1, (-1, head_dim))
        img_value = attn.to_v(hidden_states).unflatten(-1, (-1, head_dim))
        txt_query = attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_key = attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_value = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        if attn.norm_q is not None:
            img_query = attn.norm_q(img_query)
        if attn.norm_k is not None:
            img_key = attn.norm_k(img_key)
        if attn.norm_added_q is not None:
            txt_query = attn.norm_added_q(txt_query)
        if attn.norm_added_k is not None:
            txt_key = attn.norm_added_k(txt_key)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            img_query = apply_rotary_emb_qwen(img_query, img_freqs, use_real=False)
            img_key = apply_rotary_emb_qwen(img_key, img_freqs, use_real=False)
            txt_query = apply_rotary_emb_qwen(txt_query, txt_freqs, use_real=False)
            txt_key = apply_rotary_emb_qwen(txt_key, txt_freqs, use_real=False)

        if self.send_inputs:
            img_key, img_value = self.project_all_bands(
                attn, image_input, head_dim, image_rotary_emb is not None
            )
        else:
            img_key, img_value = self.gather_kv(img_key, img_value)

        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(
                (img_key.shape[0], img_key.shape[1]), dtype=torch.bool, device=hidden_states.device
            )
            attention_mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]

        seq_txt = encoder_hidden_states.shape[1]
        joint_hidden_states = dispatch_attention_fn(
            torch.cat([txt_query, img_query], dim=1),
            torch.cat([txt_key, img_key], dim=1),
            torch.cat([txt_value, img_value], dim=1),
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=None,
        )
        joint_hidden_states = joint_hidden_states.flatten(2, 3).to(img_query.dtype)
        txt_attn_output = joint_hidden_states[:, :seq_txt, :]
        img_attn_output = attn.to_out[0](joint_hidden_states[:, seq_txt:, :].contiguous())
        if len(attn.to_out) > 1:
            img_attn_output = attn.to_out[1](img_attn_output)  # dropout
        txt_attn_output = attn.to_add_out(txt_attn_output.contiguous())
        return img_attn_output, txt_attn_output

    def gather_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This band's image K and V (B, band tokens, heads, head_dim) -> every band's, in token order."""
        return self.gather_tokens(torch.cat([key, value], dim=-1)).split(key.shape[-1], dim=-1)

    def project_all_bands(
        self, attn: Attention, image_input: torch.Tensor, head_dim: int, rotate: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every band's image attention input, gathered, projected to K and V as this band projects its own, and
        rotated with the whole image's frequencies."""
        tokens = self.gather_tokens(image_input)
        key = attn.to_k(tokens).unflatten(-1, (-1, head_dim))
        value = attn.to_v(tokens).unflatten(-1, (-1, head_dim))
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if rotate:
            key = apply_rotary_emb_qwen(key, self.rt.recall(IMAGE_ROPE), use_real=False)
        return key, value


def patch_qwen_rope(pos_embed: nn.Module, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``pos_embed`` (given the whole image's shape) return the text's frequencies and this band's rows of the
    image's; with ``kv_source="input"`` it also keeps the whole image's for the K/V of the other bands."""
    cls_forward = type(pos_embed).forward

    def forward(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        assert rt.bounds is not None, "geometry is learned in the model's forward pre-hook"
        image_freqs, text_freqs = cls_forward(pos_embed, *args, **kwargs)
        image = rt.bounds[-1][1]
        if image_freqs.shape[0] != image:
            raise ValueError(
                f"img_shapes: the banded model takes the whole image's shape ({image} tokens over the bands), "
                f"got one of {image_freqs.shape[0]} tokens"
            )
        if rt.config.kv_source == "input":
            rt.remember(IMAGE_ROPE, image_freqs)
        first, end = rt.bounds[rt.rank]
        return image_freqs[first:end], text_freqs

    return replace_forward(pos_embed, forward)


def patch_qwen_attention(attn: Attention, rt: PatchRuntime) -> Callable[[], None]:
    """Install ``QwenBandAttnProcessor`` on ``attn``; returns the function restoring the old processor."""
    old = attn.processor
    if type(old).__name__ != "QwenDoubleStreamAttnProcessor2_0":
        raise NotImplementedError(
            f"Qwen-Image bands replace QwenDoubleStreamAttnProcessor2_0; this attention runs {type(old).__name__}"
        )
    return install_processor(attn, QwenBandAttnProcessor(rt, rt.new_layer_id(), getattr(old, "_attention_backend", None)))


def patch_qwen_layers(transformer: nn.Module, rt: PatchRuntime) -> list[Callable[[], None]]:
    """The rotary embedding and every block's joint attention."""
    undo = [patch_qwen_rope(transformer.pos_embed, rt)]
    for block in transformer.transformer_blocks:
        undo.append(patch_qwen_attention(block.attn, rt))
    return undo


def check_qwen_input(args: tuple, kwargs: dict) -> None:
    """Bands take packed tokens (B, tokens, channels) by keyword, as QwenImagePipeline passes them."""
    require_input_dims(args, kwargs, 3, "packed (B, tokens, channels)")
    if kwargs.get("controlnet_block_samples") is not None:
        raise NotImplementedError(
            "controlnet residuals are not banded: patch parallelism runs Qwen-Image without them"
        )


def qwen_patch_plan(transformer: nn.Module, config: PatchConfig) -> PatchPlan:
    if not isinstance(transformer, QwenImageTransformer2DModel):
        raise TypeError(
            f"transformer: expected a QwenImageTransformer2DModel, got {type(transformer).__name__}"
        )
    if getattr(transformer, "_parallel_config", None) is not None:
        raise RuntimeError("transformer: diffusers' enable_parallelism was already applied to this model")
    for flag, why in UNBANDED.items():
        if transformer.config.get(flag):
            raise NotImplementedError(f"transformer: {flag} is set, no patch bands ({why})")
    return PatchPlan(
        align=PACKING,
        input_name="hidden_states",
        patch_layers=patch_qwen_layers,
        check_input=check_qwen_input,
        input_align=1,
    )


def parallelize_qwen_patch(
    transformer: nn.Module, group: dist.ProcessGroup | None, config: PatchConfig | None = None
) -> PatchHandle:
    """Make a ``QwenImageTransformer2DModel`` run on row bands of the latent over ``group``.

    Call with the same config on every rank, then run the usual forward on each rank's band, by keyword:
    ``hidden_states`` = the band of the unpacked latent (rows ``bounds[rank]``, ``band_bounds(rows, world,
    align=2)``) packed with ``QwenImagePipeline._pack_latents``, ``img_shapes`` = the whole image's, everything else
    unchanged. Works in place.
    """
    config = config or PatchConfig()
    return parallelize_patch(transformer, group, qwen_patch_plan(transformer, config), config)
