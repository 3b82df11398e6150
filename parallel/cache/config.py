"""Configuration of step caching: which work a denoising step may reuse from an earlier step."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("none", "first-block", "deepcache", "block-cache", "taylorseer", "teacache")
STACK_MODES = ("first-block", "teacache")
"""The modes over a transformer's block stack (``first_block.StackCache``): they decide at the first block and take
the stack's residual at the last, another one, so the stack needs ``STACK_BLOCKS`` blocks at least."""
STACK_BLOCKS = 2


def stack_blocks_error(mode: str, blocks: int, denoiser: str) -> str | None:
    """Why cache ``mode`` cannot run on a transformer (class or directory ``denoiser``) of ``blocks`` transformer
    blocks; None when it can. One rule for the job's validation, which counts the blocks in the denoiser's
    config.json (``ModelFamily.transformer_blocks``), and the cache itself, which counts the loaded modules."""
    if mode not in STACK_MODES or blocks >= STACK_BLOCKS:
        return None
    return (
        f"{mode} needs at least {STACK_BLOCKS} transformer blocks (it decides at the first and takes the stack's "
        f"residual at the last), {denoiser} has {blocks}"
    )


@dataclass
class CacheConfig:
    """How a denoiser reuses work across steps (the job spec's ``cache`` section, as the worker reads it)."""

    mode: str = "none"
    """"none": every step computes everything. "first-block" (transformers; ParaAttention's First Block Cache,
    built on diffusers' hooks): every step runs the first block, and when its residual changed less than
    ``threshold`` since the last full step, the other blocks' residual from that step is reused. "deepcache"
    (UNets; DeepCache): every ``interval`` steps the whole UNet runs, in between only its outer down and up
    blocks (those down to ``branch``) and the deep features of the last full step are reused. "taylorseer" (any
    denoiser; TaylorSeer): every ``interval`` steps the model runs, in between its prediction is extrapolated
    from the last full steps' by a Taylor series of ``order``. "teacache" (transformers; TeaCache): while the first
    block's modulated input has changed less than ``threshold`` in total since the last full step, no block runs and
    that step's residual of the whole stack is reused. "block-cache" (UNets; Block Caching): each down, mid and up
    block reuses its last output until its measured change per step times the steps since reaches ``threshold``."""
    threshold: float = 0.08
    """first-block: the relative mean absolute change of the first block's residual (reduced over every worker
    of the job) below which a step reuses the other blocks; teacache: the same change of the first block's modulated
    input, summed over the steps since the last full one; block-cache: a block's expected change since it last ran.
    Higher: faster, further from full compute."""
    interval: int = 3
    """deepcache, taylorseer: a full step every ``interval`` steps (1: every step is full); block-cache: every
    ``interval`` steps (at least 2) all blocks run twice in a row to re-measure their changes."""
    branch: int = 0
    """deepcache: the deepest down/up block pair recomputed on a reusing step (0: only the outermost pair)."""
    warmup_steps: int = 2
    """Steps at the start of the job computed in full, whatever the mode decides (a later segment's first step
    is always full too: its model has nothing cached)."""
    max_skips: int = 3
    """first-block, teacache, block-cache (per block): most steps in a row that may reuse; also bounds what a pause re-runs (see ``StepCache``)."""
    order: int = 1
    """taylorseer: the Taylor series' order (0: reuse the last full step's prediction; 1: extrapolate its change
    linearly; each order needs one more full step before it is used)."""

    min_psnr: float | None = None
    """A quality budget instead of ``threshold`` / ``interval``: the fastest setting whose result stays within
    this many dB of full compute (PSNR of the final latent). The first job of a model, size, sampler and steps
    finds it by rendering (``parallel.cache.calibrate``) and the service keeps it for the later ones."""
    calibrated: bool = False
    """Set by the service, never by a job: ``threshold`` / ``interval`` hold the kept calibration for
    ``min_psnr``."""

    @property
    def enabled(self) -> bool:
        return self.mode != "none"
