"""Ulysses for a joint (video + prompt) attention whose video is split into row bands and whose prompt is whole on
every worker: a family's own sequence plan, for a model diffusers ships no ``_cp_plan`` for (HunyuanVideo,
CogVideoX).

diffusers' context parallelism splits every token of a forward at the model's entry, the prompt's too, and its
Ulysses exchanges whole Q/K/V sequences. These models' forwards do not take that as they stand (HunyuanVideo builds
the joint mask from the video length it sees; both keep the prompt's stream beside the video's), and an all-to-all
over [video share; whole prompt] would put the prompt's keys in the softmax once per worker. So the video is split
as the band plans split it (a band of latent rows of every frame per worker) and only the attention changes:

- the band's video Q/K/V (positions applied) go to the workers by heads, one all-to-all: each then holds every
  video token for its share of the heads, in band order (a key's order does not matter to attention, and each
  query's output returns to its band);
- the prompt's Q/K/V, which every worker computes whole, are cut to the worker's heads, no exchange;
- the family attends (``attend``: its mask, its kernel) over the joint sequence for those heads;
- the video outputs return to their bands by heads (the second all-to-all), and the prompt's, one share of heads
  on each worker, are all-gathered: the prompt's stream stays whole and equal on every worker.

Per layer and worker that sends about 4 (P-1)/P^2 of a Q-sized tensor of the whole video, against the band plans'
2 (P-1)/P (their K/V gather): the same on 2 workers, less from 3 on. The heads must divide by the workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import InputCheck, PatchPlan
from parallel.patch.runtime import PatchRuntime

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(query, key, value) of the joint sequence, each (B, tokens, heads, head_dim) -> output of that shape."""


def require_heads_divide(heads: int, workers: int) -> None:
    """Refuse, naming ``parallel.degree``, a worker count that does not divide the attention heads."""
    if heads % workers:
        raise ValueError(f"parallel.degree: Ulysses shares {heads} attention heads out; {workers} does not divide them")


def ulysses_plan(
    transformer: torch.nn.Module,
    config: PatchConfig,
    workers: int,
    patch_layers: Callable[[torch.nn.Module, PatchRuntime], list],
    check_input: InputCheck,
) -> PatchPlan:
    """A family's sequence plan (``parallel.patch.parallelize_patch`` applies it): the transformer's bands of
    ``patch_size`` latent rows, its latent in ``hidden_states``, ``patch_layers`` putting its positions and Ulysses
    processors on; exact, so sync only, and the heads must divide by the ``workers``."""
    if config.mode != "sync":
        raise ValueError(f"parallel.mode: Ulysses is exact, it has no {config.mode!r} mode (use sync)")
    require_heads_divide(transformer.config.num_attention_heads, workers)
    return PatchPlan(
        align=transformer.config.patch_size,
        input_name="hidden_states",
        patch_layers=patch_layers,
        check_input=check_input,
    )


def ulysses_joint_attention(
    rt: PatchRuntime,
    tags: tuple[int, int],
    video: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    band_tokens: list[int],
    attend: Attend,
    text_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint attention of this worker's band and the whole prompt, Ulysses over ``rt``'s group.

    ``video``: the band's (query, key, value), each (B, band tokens, heads, head_dim), positions applied;
    ``text``: the prompt's, each (B, prompt tokens, heads, head_dim); ``band_tokens``: every band's video tokens in
    rank order; ``attend`` runs on ``[video; text]`` (``[text; video]`` with ``text_first``); ``tags``: two p2p tags
    of this layer. Returns (the band's output, the prompt's output), every head, (B, tokens, heads, head_dim)."""
    query, key, value = video
    batch, local, heads, dim = query.shape
    require_heads_divide(heads, rt.world)
    share = heads // rt.world
    heads_of = [slice(r * share, (r + 1) * share) for r in range(rt.world)]

    qkv = torch.cat([query, key, value], dim=-1)  # one exchange for the three
    shapes = [(batch, n, share, 3 * dim) for n in band_tokens]
    gathered = rt.comm.all_to_all([qkv[:, :, h] for h in heads_of], shapes, "ulysses", tags[0]).wait()
    video = torch.cat(gathered, dim=1).split(dim, dim=-1)  # every video token, this worker's heads
    text = [t[:, :, heads_of[rt.rank]] for t in text]
    joint = [torch.cat([t, v] if text_first else [v, t], dim=1) for v, t in zip(video, text)]
    out = attend(*joint)
    tokens, prompt = video[0].shape[1], text[0].shape[1]
    text_out, video_out = (out[:, :prompt], out[:, prompt:]) if text_first else (out[:, tokens:], out[:, :tokens])

    starts = [0, *itertools.accumulate(band_tokens)]
    parts = [video_out[:, a:b] for a, b in zip(starts, starts[1:])]
    shapes = [(batch, local, share, dim)] * rt.world
    returned = rt.comm.all_to_all(parts, shapes, "ulysses", tags[1]).wait()
    texts = rt.comm.all_gather_uneven(text_out.contiguous(), [share] * rt.world, 2, "ulysses").wait()
    return torch.cat(returned, dim=2), torch.cat(texts, dim=2)
