"""Bytes each worker sends per step under each strategy, and which of them can overlap compute.

All counts follow ``parallel.comm.Comm``: a tensor delivered to each peer counts once per peer. A "step"
is one denoiser forward for image strategies, one tick (every stage busy once) for the frame pipeline,
and one optimizer step (all micro-batches, forward and backward) for pipeline training.

- patch, ``sync`` / ``displaced``: halo rows to the two neighbours, K/V all-gather, GroupNorm statistics
  all-reduce (``parallel.patch_traffic``); displaced sends them asynchronously for the next step, so all
  of it may overlap compute (after the synchronous warmup steps);
- patch, ``allgather`` scheme (distrifuser): like displaced, but each conv's boundary rows go to every peer;
- patch on a joint-attention transformer (SD3, Flux, Qwen-Image): per attention layer each band sends its
  image tokens' K/V (or attention input) to every other band; the text tokens are computed whole on every
  band and never sent, so the bytes are those of the image's K/V whatever the prompt's length (and every
  band pays for the text's compute instead: ``parallel.cost.predict.compute_share``);
- sequence parallelism (diffusers' context parallelism, ``parallel.sequence``): the model's tokens, text
  included, are split between ``ulysses x ring`` workers. Per attention layer, Ulysses swaps each worker's
  share of Q, K and V for a share of the heads by all-to-all, and the output back (each worker sends
  ``(u - 1) / u`` of its share); Ring then gathers the other ring workers' K/V shares (diffusers 0.42 gathers
  them all before attending, so it blocks; ``ring_overlap`` models a ring that passes them during the
  attention instead); at the end every worker gathers the others' shares of the output. All of it blocks the
  step except an overlapped ring;
- CFG: the two guidance branches on two halves; partners swap their band's noise prediction after each
  forward (needed at once: never overlapped), plus patch traffic at half the batch inside each branch;
- frame pipeline (DualParal): each stage sends the hidden states of one frame block to the next stage per
  tick, the last stage sends the block's noise prediction back to the first; sent while the next block
  computes;
- pipeline training: each cut carries the forward activations of every micro-batch one way and their
  gradients back (DeepSpeed ``PipelineModule``); p2p overlaps other micro-batches' compute in 1F1B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from parallel.cost.profile import ModelProfile
from parallel.patch.config import STALE_DTYPES
from parallel.patch.traffic import SCHEMES, patch_bytes_per_rank, patch_bytes_per_worker

STRATEGIES = ("none", "patch", "cfg", "sequence", "sequence-cfg", "steps", "frame-pipeline", "pipeline-train")
"""Strategies the cost model predicts: "cfg" is CFG parallel with patch bands inside each branch,
"sequence-cfg" with sequence parallelism inside each branch, "steps" step parallelism (ParaStep)."""
INFERENCE = STRATEGIES[:-1]


@dataclass
class Traffic:
    """What one worker sends in one step, on average over the workers."""

    strategy: str
    """One of ``STRATEGIES``."""
    degree: int
    """Workers."""
    bytes_per_step: dict[str, float] = field(default_factory=dict)
    """Mean bytes one worker sends per step, by kind."""
    messages_per_step: dict[str, float] = field(default_factory=dict)
    """Latency-bound rounds per step, by kind (one per p2p exchange, n-1 per ring all-gather ...)."""
    overlapped: tuple[str, ...] = ()
    """Kinds whose transfer may run beside compute instead of blocking it."""

    @property
    def total_bytes(self) -> float:
        return sum(self.bytes_per_step.values())

    def blocking(self) -> tuple[float, float]:
        """(bytes, messages) the compute waits for."""
        kinds = [k for k in self.bytes_per_step if k not in self.overlapped]
        return (
            sum(self.bytes_per_step[k] for k in kinds),
            sum(self.messages_per_step.get(k, 0) for k in kinds),
        )

    def hidden(self) -> tuple[float, float]:
        """(bytes, messages) that may overlap compute."""
        kinds = [k for k in self.bytes_per_step if k in self.overlapped]
        return (
            sum(self.bytes_per_step[k] for k in kinds),
            sum(self.messages_per_step.get(k, 0) for k in kinds),
        )


def stale_factor(profile: ModelProfile, mode: str, stale_dtype: str | None) -> float:
    """Bytes of an activation element that displaced steps send and keep, over the profile's element bytes:
    below 1 when ``PatchConfig.stale_dtype`` is narrower than the model's dtype."""
    if mode != "displaced" or stale_dtype is None:
        return 1.0
    return min(1.0, STALE_DTYPES[stale_dtype].itemsize / profile.dtype_bytes)


def _log2_rounds(n: int) -> int:
    return max(1, math.ceil(math.log2(n))) if n > 1 else 0


def patch_traffic(
    profile: ModelProfile,
    degree: int,
    mode: str = "sync",
    scheme: str = "neighbour",
    batch_fraction: float = 1.0,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
) -> Traffic:
    """Patch parallelism over ``degree`` bands; ``batch_fraction`` scales the profiled batch (0.5 in a CFG
    branch of a batch-2 profile). ``kv_source`` and ``stale_dtype`` as in ``PatchConfig``: what self-attention
    exchanges, and the precision displaced steps send activations in."""
    if mode not in ("sync", "displaced"):
        raise ValueError(f"mode: expected 'sync' or 'displaced', got {mode!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: unknown scheme {scheme!r}; expected one of {SCHEMES}")
    t = Traffic("patch", degree)
    if degree <= 1:
        return t
    sent = patch_bytes_per_worker(profile.patch, degree, scheme, kv_source)
    narrow = stale_factor(profile, mode, stale_dtype)
    t.bytes_per_step = {k: v * batch_fraction * (narrow if k != "norm" else 1.0) for k, v in sent.items()}
    t.messages_per_step = {
        "halo": float(
            len(profile.patch.halo_rows)
            if scheme == "neighbour"
            else len(profile.patch.padding_rows) * (degree - 1)
        ),
        "kv": float(len(profile.patch.kv_bytes) * (degree - 1)),
        "norm": float(len(profile.patch.norm_bytes) * 2 * _log2_rounds(degree)),
    }
    if mode == "displaced" or scheme == "allgather":
        t.overlapped = ("halo", "kv", "norm")
    return t


def patch_traffic_per_rank(
    profile: ModelProfile, bounds: list[tuple[int, int]], kv_source: str = "kv"
) -> list[dict[str, float]]:
    """Exact bytes each rank sends per step for these latent row bands (profile's batch)."""
    return patch_bytes_per_rank(profile.patch, bounds, kv_source)


def cfg_traffic(
    profile: ModelProfile,
    degree: int,
    mode: str = "sync",
    scheme: str = "neighbour",
    kv_source: str = "kv",
    stale_dtype: str | None = None,
) -> Traffic:
    """CFG parallel: 2 branches x ``degree // 2`` bands. The profile is of the batched (batch 2) forward."""
    if degree < 2 or degree % 2:
        raise ValueError(f"degree: CFG parallelism needs an even degree >= 2, got {degree}")
    if profile.batch < 2 or profile.batch % 2:
        raise ValueError(
            f"profile: CFG parallelism splits a batch-2 (guided) forward, got batch {profile.batch}"
        )
    bands = degree // 2
    t = patch_traffic(profile, bands, mode, scheme, 0.5, kv_source, stale_dtype)
    t.strategy, t.degree = "cfg", degree
    t.bytes_per_step["cfg"] = profile.latent_bytes / 2 / bands  # this band's noise, batch 1, to the partner
    t.messages_per_step["cfg"] = 1.0
    return t


def sequence_traffic(
    profile: ModelProfile, degree: int, ring: int = 1, branches: int = 1, ring_overlap: bool = False
) -> Traffic:
    """Sequence parallelism (diffusers' Ulysses and Ring) over ``degree`` workers: ``branches`` = 2 splits the
    guidance branches of a batch-2 profile over two halves first (each half splits its branch's sequence,
    then partners swap their noise, as in CFG parallel). Within a branch, ``ring`` workers form a ring and the
    rest is Ulysses: ``degree / branches = ulysses x ring``."""
    if branches not in (1, 2) or degree % branches:
        raise ValueError(f"degree: {degree} workers do not split into {branches} guidance branches")
    workers = degree // branches
    if ring < 1 or workers % ring:
        raise ValueError(f"ring: the Ring degree {ring} must divide the {workers} workers of a branch")
    if branches == 2 and (profile.batch < 2 or profile.batch % 2):
        raise ValueError(f"profile: CFG parallelism splits a batch-2 (guided) forward, got batch {profile.batch}")
    t = Traffic("sequence" if branches == 1 else "sequence-cfg", degree)
    if degree <= 1:
        return t
    ulysses = workers // ring
    shapes = profile.attention
    fraction = 1.0 / branches / workers  # this worker's share of the profiled batch's tokens
    layers = len(shapes.tokens)
    t.bytes_per_step = {
        "ulysses": sum(shapes.qkvo_bytes) * fraction * (ulysses - 1) / ulysses,
        "ring": sum(shapes.kv_bytes) * fraction * (ring - 1),
        "gather": (profile.output_bytes or profile.latent_bytes) * fraction * (workers - 1),
    }
    t.messages_per_step = {
        # an all-to-all sends to every peer at once: one latency each for Q, K, V and the output
        "ulysses": float(4 * layers) if ulysses > 1 else 0.0,
        "ring": float(layers * (ring - 1)),  # a ring all-gather takes ring - 1 steps
        "gather": float(workers - 1),
    }
    if branches == 2:
        t.bytes_per_step["cfg"] = profile.latent_bytes / 2  # this branch's whole noise, to the partner
        t.messages_per_step["cfg"] = 1.0
    if ring_overlap:
        t.overlapped = ("ring",)
    return t


def profile_latent_frames(profile: ModelProfile) -> int:
    """The latent frames a video profile was taken on (by the VAE's 4 frames per latent frame when the profile
    does not say, as profiles of Wan's published configs were taken)."""
    return profile.latent_frames or (profile.frames - 1) // 4 + 1


def frame_block_tokens(profile: ModelProfile, block_latent_frames: int) -> float:
    """Tokens of one frame block of ``block_latent_frames`` latent frames (a video-DiT profile)."""
    return profile.tokens * block_latent_frames / profile_latent_frames(profile)


def frame_pipeline_traffic(profile: ModelProfile, stages: int, block_latent_frames: int = 1) -> Traffic:
    """DualParal: ``stages`` workers each hold ``blocks / stages`` transformer blocks; per tick, each
    stage passes one frame block's hidden states on, and the last returns the block's noise prediction."""
    if profile.tokens == 0:
        raise ValueError("profile: the frame pipeline needs a transformer (video-dit) profile")
    t = Traffic("frame-pipeline", stages)
    if stages <= 1:
        return t
    tokens = frame_block_tokens(profile, block_latent_frames)
    if profile.kind.startswith("video-mmdit"):  # joint attention: the text stream travels with the video
        tokens += profile.text_tokens
    hidden = profile.batch * tokens * profile.hidden_bytes_per_token
    noise = profile.latent_bytes * block_latent_frames / profile_latent_frames(profile)
    t.bytes_per_step = {"activations": hidden * (stages - 1) / stages, "noise": noise / stages}
    t.messages_per_step = {"activations": 1.0, "noise": 1.0 / stages}
    t.overlapped = ("activations", "noise")
    return t


def carry_bytes(layers: Sequence[nn.Module], inputs: tuple[torch.Tensor, ...]) -> list[int]:
    """Bytes of the tuple each layer of a pipeline layer list hands to the next (run on meta or real
    tensors): entry ``i`` is what crosses a cut placed after layer ``i``."""
    out = []
    carry: object = inputs
    with torch.no_grad():
        for layer in layers:
            carry = layer(carry)
            out.append(
                sum(
                    t.numel() * t.element_size()
                    for t in tree_flatten(carry)[0]
                    if isinstance(t, torch.Tensor)
                )
            )
    return out


def float_carry_bytes(layers: Sequence[nn.Module], inputs: tuple[torch.Tensor, ...]) -> list[int]:
    """Like ``carry_bytes`` but floating tensors only: what the backward pass returns as gradients."""
    out = []
    carry: object = inputs
    with torch.no_grad():
        for layer in layers:
            carry = layer(carry)
            tensors = [
                t for t in tree_flatten(carry)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()
            ]
            out.append(sum(t.numel() * t.element_size() for t in tensors))
    return out


def pipeline_training_traffic(
    cut_forward_bytes: Sequence[float], cut_grad_bytes: Sequence[float], micro_batches: int
) -> Traffic:
    """Pipeline training with ``len(cuts) + 1`` stages: per optimizer step, every micro-batch's carry
    crosses each cut forward and its gradient crosses back."""
    stages = len(cut_forward_bytes) + 1
    t = Traffic("pipeline-train", stages)
    if stages <= 1:
        return t
    t.bytes_per_step = {
        "activations": micro_batches * sum(cut_forward_bytes) / stages,
        "gradients": micro_batches * sum(cut_grad_bytes) / stages,
    }
    t.messages_per_step = {"activations": float(micro_batches), "gradients": float(micro_batches)}
    t.overlapped = ("activations", "gradients")
    return t


def steps_traffic(profile: ModelProfile, degree: int) -> Traffic:
    """Step parallelism (ParaStep): each round of ``degree`` steps, every worker all-gathers its one noise
    prediction (the output's bytes) to the others; per step, a ``1 / degree`` share of that round."""
    if degree < 2:
        raise ValueError(f"degree: step parallelism needs 2 or more workers, got {degree}")
    noise = profile.output_bytes or profile.latent_bytes
    return Traffic(
        "steps",
        degree,
        bytes_per_step={"noise": noise * (degree - 1) / degree},
        messages_per_step={"noise": _log2_rounds(degree) / degree},
    )


def strategy_traffic(
    profile: ModelProfile,
    strategy: str,
    degree: int,
    mode: str = "sync",
    scheme: str = "neighbour",
    kv_source: str = "kv",
    stale_dtype: str | None = None,
    ring: int = 1,
    ring_overlap: bool = False,
    **kw: int,
) -> Traffic:
    """Traffic of an inference strategy by name (pipeline training takes cut sizes: call it directly).
    ``ring`` / ``ring_overlap``: sequence parallelism's Ring degree, and whether its ring overlaps compute."""
    if strategy == "none" or degree <= 1:
        return Traffic(strategy, degree)
    if strategy == "patch":
        return patch_traffic(profile, degree, mode, scheme, 1.0, kv_source, stale_dtype)
    if strategy == "cfg":
        return cfg_traffic(profile, degree, mode, scheme, kv_source, stale_dtype)
    if strategy in ("sequence", "sequence-cfg"):
        return sequence_traffic(profile, degree, ring, 2 if strategy == "sequence-cfg" else 1, ring_overlap)
    if strategy == "steps":
        return steps_traffic(profile, degree)
    if strategy == "frame-pipeline":
        return frame_pipeline_traffic(profile, degree, **kw)
    raise ValueError(f"strategy: unknown inference strategy {strategy!r}; expected one of {INFERENCE}")
