"""The HunyuanVideo family's sequence plan: Ulysses over the joint attention, written here because diffusers has none.

diffusers 0.42 ships no ``_cp_plan`` for ``HunyuanVideoTransformer3DModel``, and its context parallelism could not
take one as the model stands: the forward builds the [video; text] key mask from the video length it sees, and
an all-to-all over [video share; whole prompt] would put the prompt's keys in the joint softmax once per worker.
So this plan splits only the video, as the band plan does (``patch``: each worker holds a band of latent rows of
every frame, and the whole prompt), and changes only the attention (``HunyuanUlyssesJointAttnProcessor``, both
the dual- and the single-stream blocks):

- the band's video Q/K/V (after RMSNorm and rotary, the whole grid's rotary table: ``patch.patch_hunyuan_rope``)
  go to the workers by heads, one all-to-all: each worker then holds every video token for its share of the heads
  (in band order; a key's order does not matter to attention, and the queries' outputs return to their band);
- the prompt's Q/K/V, which every worker computes whole, are cut to the worker's heads, no exchange;
- attention over [every video token; the prompt] for those heads, the model's own key mask on the prompt;
- the video outputs return to their bands by heads (the second all-to-all) and the prompt's outputs, one share
  of heads on each worker, are all-gathered, so the text stream stays whole and equal on every worker.

Against bands (which gather every band's K/V on every worker, and compute every head of the band's queries),
each worker sends a share of Q/K/V and receives its outputs: per layer and worker about 4 x video x (P-1)/P^2
of a Q-sized tensor against bands' 2 x video x (P-1)/P, so Ulysses moves less from 3 workers on. Exact like sync
bands: no displaced mode. The heads must divide by the workers (checked at submit, ``parallel.degree``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import PatchPlan
from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import install_processor
from pipelines.families.hunyuanvideo.frames import joint_outputs, joint_projections
from pipelines.families.hunyuanvideo.patch import (
    BAND_TOKENS,
    check_hunyuan_input,
    check_hunyuan_model,
    patch_hunyuan_rope,
)


class HunyuanUlyssesJointAttnProcessor:
    """``HunyuanVideoAttnProcessor2_0`` on a band of video tokens, Ulysses over the workers' heads."""

    def __init__(self, rt: PatchRuntime, layer: int) -> None:
        self.rt = rt
        self.tags = (2 * layer, 2 * layer + 1)  # Q/K/V out, outputs back

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rt = self.rt
        video_tokens, text_tokens = hidden_states.shape[1], encoder_hidden_states.shape[1]
        query, key, value, text_query, text_key, text_value = joint_projections(
            attn, hidden_states, encoder_hidden_states
        )
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        batch, _, heads, head_dim = query.shape
        share = heads // rt.world
        tokens = rt.recall(BAND_TOKENS)  # every band's video tokens
        heads_of = [slice(r * share, (r + 1) * share) for r in range(rt.world)]

        qkv = torch.cat([query, key, value], dim=-1)  # one exchange for the three
        parts = [qkv[:, :, h] for h in heads_of]
        shapes = [(batch, n, share, 3 * head_dim) for n in tokens]
        gathered = rt.comm.all_to_all(parts, shapes, "ulysses", self.tags[0]).wait()
        query, key, value = torch.cat(gathered, dim=1).split(head_dim, dim=-1)  # every video token, my heads
        mine = heads_of[rt.rank]

        mask = None
        if attention_mask is not None:  # [B, 1, 1, band + text]: every video key, the model's text keys
            text_mask = attention_mask[..., -text_tokens:]
            video_mask = text_mask.new_ones(*text_mask.shape[:-1], key.shape[1])
            mask = torch.cat([video_mask, text_mask], dim=-1)
        out = dispatch_attention_fn(
            torch.cat([query, text_query[:, :, mine]], dim=1),
            torch.cat([key, text_key[:, :, mine]], dim=1),
            torch.cat([value, text_value[:, :, mine]], dim=1),
            attn_mask=mask,
            dropout_p=0.0,
            is_causal=False,
        )
        video_out, text_out = out[:, : key.shape[1]], out[:, key.shape[1] :]

        starts = [0, *itertools.accumulate(tokens)]
        parts = [video_out[:, a:b] for a, b in zip(starts, starts[1:])]
        shapes = [(batch, video_tokens, share, head_dim)] * rt.world
        returned = rt.comm.all_to_all(parts, shapes, "ulysses", self.tags[1]).wait()
        texts = rt.comm.all_gather_uneven(text_out, [share] * rt.world, 2, "ulysses").wait()
        out = torch.cat([torch.cat(returned, dim=2), torch.cat(texts, dim=2)], dim=1)  # all heads, in head order
        return joint_outputs(attn, out.to(hidden_states.dtype), video_tokens)


def patch_ulysses_layers(transformer: nn.Module, rt: PatchRuntime) -> list[Callable[[], None]]:
    """The rotary table (whole grid, this band's rows) and Ulysses in the joint attention of every dual- and
    single-stream block."""
    undo = [patch_hunyuan_rope(transformer.rope, rt)]
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        undo.append(install_processor(block.attn, HunyuanUlyssesJointAttnProcessor(rt, rt.new_layer_id())))
    return undo


def hunyuan_ulysses_plan(transformer: nn.Module, config: PatchConfig, workers: int) -> PatchPlan:
    """The plan ``parallel.patch.parallelize_patch`` applies for ``parallel.strategy=sequence``."""
    check_hunyuan_model(transformer)
    if config.mode != "sync":
        raise ValueError(f"parallel.mode: HunyuanVideo's Ulysses is exact, it has no {config.mode!r} mode (use sync)")
    heads = transformer.config.num_attention_heads
    if heads % workers:
        raise ValueError(
            f"parallel.degree: Ulysses shares the model's {heads} attention heads out; {workers} does not divide them"
        )
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        patch_layers=patch_ulysses_layers,
        check_input=check_hunyuan_input,
    )
