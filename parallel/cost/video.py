"""degree=auto for a video: frames, sequence or bands, and on how many workers, for the whole render.

    choose_video_plan(spec, height, width, latent_frames, block_latent_frames, steps, free_workers,
                      strategies=("frames", "sequence", "patch"), max_stages=..., batch=2) -> VideoPlan

The three video strategies do different amounts of work per unit, so they are compared by the seconds of the
whole render's denoising and VAE decode (placed as each strategy runs it: ``parallel.cost.video_decode``), not
per step: the frame pipeline (``frames``) runs ``blocks x steps`` work items of
one block each through its stages, ``items + stages - 1`` ticks (the profile is of one block);
``sequence`` (Ulysses: every worker's share of the heads must divide them and of the video tokens too) and
``patch`` (row bands of every frame, a patch row at least each) run ``steps`` forwards of the whole video (the
profile is of the whole latent video). With both guidance branches (``batch`` 2), each whole-video strategy is
also weighed with CFG parallel (``VideoPlan.cfg``: a branch on each half of the workers, priced as the image
strategies "sequence-cfg" and "cfg" are), and so is the frame pipeline (a branch per worker on 2 workers, each
rendering every block on one stage: priced as "cfg" of one band per branch on the block; on 2n workers a branch per
pipeline of n stages at batch 1, the last stages swapping outputs); its stages otherwise batch the branches. One
worker renders block-wise (the frame pipeline on one stage). As for images (``parallel.cost.choose``), a larger
degree is taken only when it is predicted ``min_gain`` faster than the best at fewer workers, and a plan must fit
the device's memory.

Latent frames are counted here, as the caller's job renders them; the profile is asked for the video frames
that give them under the model's ``temporal_scale`` convention (``ModelSpec.latent_shape``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from parallel.cost.choose import candidate_degrees
from parallel.cost.models import ModelSpec
from parallel.cost.predict import Prediction, predict
from parallel.cost.profile import ModelProfile, profile_model
from parallel.cost.specs import load_specs
from parallel.cost.video_decode import block_decode_s, pipeline_decode_s

VIDEO_STRATEGIES = ("frames", "sequence", "patch")


@dataclass(frozen=True)
class VideoPlan:
    """A video strategy and degree with what the cost model predicts for the whole render."""

    strategy: str
    """The job's ``parallel.strategy``: "none" (one worker, block-wise), "frames", "sequence" or "patch"."""
    degree: int
    """Workers."""
    render_s: float
    """Predicted seconds of the render: its denoising (every step of every block) and ``decode_s``."""
    prediction: Prediction
    """The per-unit prediction it came from (a work item of one block for frames, a whole-video step else)."""
    cfg: bool = False
    """CFG parallel (the job's ``parallel.cfg``): each guidance branch on half the workers, split by ``strategy``."""
    decode_s: float = 0.0
    """Seconds the VAE's decodes add to the render where the strategy places them (``parallel.cost.video_decode``;
    0 where the family names no VAE the cost model can build)."""

    def as_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "degree": self.degree,
            "cfg": self.cfg,
            "predicted_render_s": self.render_s,
            "predicted_decode_s": self.decode_s,
            "predicted_speedup": self.prediction.speedup,
            "predicted_memory_bytes": self.prediction.memory_bytes,
        }


def _video_frames(spec: ModelSpec, latent_frames: int) -> int:
    """The video frames ``profile_model`` turns into ``latent_frames`` latent frames."""
    return (latent_frames - 1) * spec.temporal_scale + 1


def ulysses_splits(profile: ModelProfile, workers: int) -> bool:
    """Whether Ulysses over ``workers`` can split the video: its tokens and every attention's heads divide. A
    video DiT's context-parallel plan may keep the prompt whole, so its length does not count
    (``parallel.cost.choose.ring_degrees`` asks that of image models, whose plans split it)."""
    heads = set(profile.attention.heads)
    return bool(heads) and profile.tokens % workers == 0 and all(h % workers == 0 for h in heads)


_PROFILES: dict[tuple, ModelProfile] = {}
"""Profiles already taken, by model and size: the scheduler asks again on every poll of a queued job."""


def video_profile(
    spec: ModelSpec, height: int, width: int, latent_frames: int, batch: int, device: str, specs_yaml: str | None
) -> ModelProfile:
    """The model's profile on ``latent_frames`` latent frames at this size, in the device's dtype (memoised)."""
    dtype = load_specs(*([specs_yaml] if specs_yaml else [])).device(device).dtype
    key = (spec.name, json.dumps(spec.config, sort_keys=True, default=str), spec.kind, spec.text_len, height, width,
           latent_frames, batch, dtype)
    if key not in _PROFILES:
        if len(_PROFILES) > 64:
            _PROFILES.clear()
        frames = _video_frames(spec, latent_frames)
        _PROFILES[key] = profile_model(spec, height, width, frames, batch, getattr(torch, dtype))
    return _PROFILES[key]


def rank_video_plans(
    spec: ModelSpec,
    height: int,
    width: int,
    latent_frames: int,
    block_latent_frames: int,
    steps: int,
    free_workers: int,
    strategies: Iterable[str] = VIDEO_STRATEGIES,
    max_stages: int | None = None,
    batch: int = 2,
    mode: str = "sync",
    warmup_steps: int = 1,
    device: str = "cpu-core",
    link: str = "loopback",
    specs_yaml: str | None = None,
) -> list[VideoPlan]:
    """Every plan the strategies offer up to ``free_workers``, with its predicted render seconds. ``max_stages``:
    the most frame-pipeline stages the model and video allow (default: its blocks); ``batch`` 2 (both guidance
    branches) adds the whole-video strategies' CFG-parallel plans at even degrees; ``mode``/``warmup_steps``: the
    bands' exchange."""
    wanted = set(strategies)
    unknown = wanted - set(VIDEO_STRATEGIES)
    if unknown:
        raise ValueError(f"strategies: unknown {sorted(unknown)}; expected some of {VIDEO_STRATEGIES}")
    blocks = -(-latent_frames // block_latent_frames)
    items = blocks * steps
    stages = blocks if max_stages is None else min(max_stages, blocks)
    block = video_profile(spec, height, width, block_latent_frames, batch, device, specs_yaml)

    def decode_total(read: int, corun: bool) -> float:
        """Seconds of the video's decode in blocks that each read ``read`` latent frames (alone, or beside busy
        workers); the last block's shorter decode priced pro rata."""
        return block_decode_s(spec, height, width, read, device, corun, specs_yaml) * latent_frames / block_latent_frames

    # a block-wise decode reads the frames it takes beyond the block's own; a whole-video one none again
    window = min(latent_frames, block_latent_frames + spec.decode_extra_frames)
    solo_s, corun_s = decode_total(window, False) / blocks, decode_total(window, True) / blocks
    plans = []
    most = min(free_workers, stages) if "frames" in wanted else 1
    item_s = 0.0
    for n in range(1, max(1, most) + 1):
        p = predict(block, "frame-pipeline", n, device, link, steps=steps, pipeline_items=items,
                    specs_yaml=specs_yaml)
        item_s = item_s or p.mean_step_s  # one worker's work item
        decode = pipeline_decode_s(item_s, corun_s if n > 1 else solo_s, blocks, steps, n, spec.decode_by_frames)
        plans.append(VideoPlan("frames" if n > 1 else "none", n, p.mean_step_s * items + decode, p, decode_s=decode))
    if "frames" in wanted and batch == 2 and free_workers >= 2 and blocks > 1:
        # a guidance branch per worker, each rendering every block on one stage: priced as CFG parallel of one
        # band per branch (half the batch's FLOPs, every op, the output swapped per item); one block is the
        # whole-video split's same work, weighed below. The two stay in step: a per-frame VAE's block is decoded
        # half on each, a causal VAE's whole on rank 0 while its partner waits
        p = predict(block, "cfg", 2, device, link, mode, steps=steps, specs_yaml=specs_yaml)
        share = math.ceil(block_latent_frames / 2) / block_latent_frames if spec.decode_by_frames else 1.0
        decode = blocks * corun_s * share
        plans.append(VideoPlan("frames", 2, p.mean_step_s * items + decode, p, cfg=True, decode_s=decode))
        plans += _branch_pipelines(spec, height, width, block_latent_frames, steps, blocks, corun_s,
                                   min(stages, free_workers // 2), device, link, specs_yaml)
    if free_workers < 2 or not wanted & {"sequence", "patch"}:
        return plans
    whole = video_profile(spec, height, width, latent_frames, batch, device, specs_yaml)
    split_branches = batch == 2

    def whole_plan(strategy: str, n: int, p: Prediction, cfg: bool = False) -> VideoPlan:
        """The one block, decoded on rank 0 after the last step, or half on each of a worker per branch where the
        frames decode apart (the partner the later half)."""
        decode = decode_total(block_latent_frames, False)
        if cfg and n == 2 and spec.decode_by_frames:
            decode = decode_total(block_latent_frames, True) * math.ceil(latent_frames / 2) / latent_frames
        return VideoPlan(strategy, n, p.mean_step_s * steps + decode, p, cfg=cfg, decode_s=decode)

    if "sequence" in wanted:
        for n in range(2, free_workers + 1):
            if ulysses_splits(whole, n):
                p = predict(whole, "sequence", n, device, link, steps=steps, specs_yaml=specs_yaml, ring=1)
                plans.append(whole_plan("sequence", n, p))
            if split_branches and n % 2 == 0 and ulysses_splits(whole, n // 2):
                p = predict(whole, "sequence-cfg", n, device, link, steps=steps, specs_yaml=specs_yaml, ring=1)
                plans.append(whole_plan("sequence", n, p, cfg=True))
    if "patch" in wanted:
        for n in candidate_degrees(whole, free_workers, "patch"):
            if n > 1:
                p = predict(whole, "patch", n, device, link, mode, steps=steps, warmup_steps=warmup_steps,
                            specs_yaml=specs_yaml)
                plans.append(whole_plan("patch", n, p))
        for n in candidate_degrees(whole, free_workers, "cfg") if split_branches else []:
            if n > 1:
                p = predict(whole, "cfg", n, device, link, mode, steps=steps, warmup_steps=warmup_steps,
                            specs_yaml=specs_yaml)
                plans.append(whole_plan("patch", n, p, cfg=True))
    return plans


def _branch_pipelines(
    spec: ModelSpec,
    height: int,
    width: int,
    block_latent_frames: int,
    steps: int,
    blocks: int,
    decode_block_s: float,
    most: int,
    device: str,
    link: str,
    specs_yaml: str | None,
) -> list[VideoPlan]:
    """The frame pipeline with a guidance branch per half of 2n workers, each half a pipeline of n >= 2 stages
    running its branch alone (batch 1), the last stages swapping one branch's output per work item; the
    conditional branch decodes as its n stages would alone (``decode_block_s`` a block's decode beside busy
    workers), the unconditional one none, waiting for it at the swaps."""
    if most < 2:
        return []
    half = video_profile(spec, height, width, block_latent_frames, 1, device, specs_yaml)
    items = blocks * steps
    one_s = predict(half, "none", 1, device, link, steps=steps, specs_yaml=specs_yaml).mean_step_s
    swap_s = load_specs(*([specs_yaml] if specs_yaml else [])).link(link).seconds(half.latent_bytes, 1)
    plans = []
    for n in range(2, most + 1):
        p = predict(half, "frame-pipeline", n, device, link, steps=steps, pipeline_items=items, specs_yaml=specs_yaml)
        decode = pipeline_decode_s(one_s, decode_block_s, blocks, steps, n, spec.decode_by_frames)
        plans.append(VideoPlan("frames", 2 * n, (p.mean_step_s + swap_s) * items + decode, p, cfg=True,
                               decode_s=decode))
    return plans


def pick_video_plan(plans: list[VideoPlan], min_gain: float = 0.05) -> VideoPlan:
    """The fastest fitting plan, at a larger degree only when ``min_gain`` faster than the best at fewer
    workers; when nothing fits, the smallest memory."""
    fitting = sorted((p for p in plans if p.prediction.fits), key=lambda p: (p.degree, p.render_s))
    if not fitting:
        return min(plans, key=lambda p: p.prediction.memory_bytes)
    best = fitting[0]
    for p in fitting[1:]:
        if p.render_s < best.render_s * (1.0 - min_gain):
            best = p
    return best


def choose_video_plan(*args, min_gain: float = 0.05, **kwargs) -> VideoPlan:
    """``pick_video_plan(rank_video_plans(...))``."""
    return pick_video_plan(rank_video_plans(*args, **kwargs), min_gain)
