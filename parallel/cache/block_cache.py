"""Block caching for UNets (Wimbauer et al., 2024): each block is recomputed only when its output is due to change.

A UNet's blocks change at different rates along the denoising trajectory: the deep ones hardly move for many steps,
the outer ones more. Block caching measures each block's change and reuses a block's last output until its
expected change since then reaches a threshold. Here the blocks are the UNet's ``down_blocks``, ``mid_block`` and
``up_blocks``; each gets one of diffusers' hooks (as DeepCache's modules do), so the UNet's own forward is
untouched. A reused down block hands on its last output and skip residuals, which the up path reads as if it had
run.

The decision of block ``b`` at step ``s``: it runs when ``rate[b] * (s - last[b]) >= threshold``, where
``last[b]`` is the step it last ran and ``rate[b]`` its relative change per step measured at its last two runs
(summed over the job's process group: ``step_cache.group_relative_change``, so row bands, CFG halves and any
worker take one device's decision). Every ``interval`` steps (counted from the job's step 0) all blocks run on two
steps in a row, which re-measures every rate; the state a decision reads then depends only on those two steps. So a
stopped job hands out the state from just before the last such pair (``end_step`` is True at its first step) and a
resumed job re-runs it and decides exactly as the uninterrupted one. ``max_skips`` bounds how long a block may be
reused; the first ``warmup_steps`` run in full.

The paper derives each block's schedule offline from a profiling run and adds a learned scale-shift to the reused
outputs; neither is here: the schedule is measured online and the threshold is calibrated per model by
``cache.min_psnr`` as for the other modes.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from parallel.cache.config import CacheConfig
from parallel.cache.deepcache import _drop_empty_registry, _invalidate_registry_cache
from parallel.cache.step_cache import StepRecord, group_relative_change

HOOK = "tessera_block_cache"


def unet_blocks(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, block) of the UNet's down blocks, mid block and up blocks, in the order its forward runs them."""
    down, up = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if not isinstance(down, torch.nn.ModuleList) or not isinstance(up, torch.nn.ModuleList):
        raise ValueError(f"cache.mode: block-cache needs a UNet (down_blocks and up_blocks), not a {type(unet).__name__}")
    blocks = [(f"down_blocks.{i}", block) for i, block in enumerate(down)]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(("mid_block", unet.mid_block))
    return blocks + [(f"up_blocks.{i}", block) for i, block in enumerate(up)]


def _first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class _BlockHook(ModelHook):
    """One block's decision and its last output."""

    def __init__(self, cache: BlockCache, name: str) -> None:
        super().__init__()
        self.cache = cache
        self.name = name
        self.output: Any = None
        self.last: int | None = None
        """The step it last ran."""
        self.rate: float | None = None
        """Relative change of its output per step, measured at its last two runs."""
        self.ran = False

    def due(self, step: int) -> bool:
        cache = self.cache
        if cache.refresh or self.output is None or self.rate is None or self.last is None:
            return True
        since = step - self.last
        return since > cache.config.max_skips or self.rate * since >= cache.config.threshold

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        if not cache.in_step:
            return self.fn_ref.original_forward(*args, **kwargs)
        if self.ran:
            raise RuntimeError(f"block cache: {self.name} called twice in one step; the denoiser must be called once a step")
        self.ran = True
        if not self.due(cache.step):
            cache.reused.setdefault(cache.step, []).append(self.name)
            return self.output
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.output is not None and self.last is not None:
            new, old = _first_tensor(output), _first_tensor(self.output)
            if new.shape == old.shape:
                self.rate = group_relative_change(new - old, old) / max(1, cache.step - self.last)
        self.output, self.last = output, cache.step
        return output


class BlockCache:
    """A ``StepCache`` over a UNet's blocks (see ``apply_block_cache``)."""

    def __init__(self, unet: torch.nn.Module, config: CacheConfig, first_step: int) -> None:
        self.unet = unet
        self.config = config
        self.first_step = first_step
        self.blocks = unet_blocks(unet)
        self.record = StepRecord(config.mode)
        self.reused: dict[int, list[str]] = {}
        """Step -> the blocks it reused."""
        self.step = first_step
        self.in_step = False
        self.refresh = True
        self.fresh = True
        """Whether the step in progress began with nothing cached (a segment's or a resume's first step)."""
        self.hooks: list[_BlockHook] = []
        for name, block in self.blocks:
            hook = _BlockHook(self, name)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, HOOK)
            self.hooks.append(hook)
        _invalidate_registry_cache(unet)

    def refreshes(self, step: int) -> bool:
        """Whether every block runs at ``step``: the warm-up, and two steps in a row every ``interval`` (a pure
        function of the job's step), or the segment's first two steps (nothing measured yet)."""
        since = step - self.first_step
        if since < max(2, self.config.warmup_steps):
            return True
        return step % max(2, self.config.interval) in (0, 1)

    def begin_step(self, step: int) -> None:
        self.step = step
        self.refresh = self.refreshes(step)
        self.fresh = all(hook.output is None for hook in self.hooks)
        self.in_step = True
        for hook in self.hooks:
            hook.ran = False

    def end_step(self) -> bool:
        """True at the first step of a refreshing pair or of a fresh cache: the state before it is what a stop hands
        out (what a decision reads after it depends only on that step and the next)."""
        self.in_step = False
        self.record.add(self.step, self.step not in self.reused)
        return self.fresh or (self.refresh and not self.refreshes(self.step - 1))

    def report(self) -> dict:
        return {
            **self.record.report(),
            "threshold": self.config.threshold,
            "interval": self.config.interval,
            "max_skips": self.config.max_skips,
            "reused_blocks": {step: list(names) for step, names in self.reused.items()},
        }

    def close(self) -> None:
        for (_, block), hook in zip(self.blocks, self.hooks):
            hook.output = None
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.remove_hook(HOOK, recurse=False)
            if not registry.hooks:
                _drop_empty_registry(block)
        self.hooks = []
        _invalidate_registry_cache(self.unet)


def apply_block_cache(unet: torch.nn.Module, config: CacheConfig, first_step: int) -> BlockCache:
    """Attach block caching to ``unet`` (a diffusers UNet) for a segment that starts at step ``first_step``."""
    return BlockCache(unet, config, first_step)
