"""DeepCache for UNets (Ma et al. 2023): reuse the deep features of the last full step, recompute the outer ones.

A UNet's forward runs ``conv_in``, its down blocks, the mid block, its up blocks and ``conv_out``; each up block
takes the previous block's output and, as skip connections, the residuals of the down path in reverse order.
Counting the residuals (``conv_in``'s output, then each down block's resnets and downsampler), the last
``branch + 1`` up blocks take exactly those of ``conv_in`` and of ``down_blocks[0..branch]``, except the output
of ``down_blocks[branch]``'s downsampler, which goes (as residual and as input) only to deeper blocks. So the
outer path, ``down_blocks[:branch + 1]`` (its downsampler excepted) and ``up_blocks[-(branch + 1):]``, needs
one tensor from the deep part: the output of ``up_blocks[-(branch + 2)]``, the deepest up block it does not hold
(the mid block's output when ``branch`` is the last down block). That feature changes slowly from one
denoising step to the next, which is what DeepCache exploits.

Here every deep module (``down_blocks[branch]``'s downsampler, ``down_blocks[branch + 1:]``, ``mid_block``,
``up_blocks[:-(branch + 1)]``) gets one of diffusers' hooks. On a full step it runs and keeps its output; on a
reusing step it returns that output without running. The UNet's own forward is untouched (controlnet residuals,
upsample sizes, SDXL's added conditioning keep working) and on a reusing step only the outer modules compute.
The kept outputs of the deep down blocks and the mid block flow only into other deep modules then, where
nothing reads them: keeping them is the price of not rewriting the forward (a few feature maps at 1/4 of the
latent's resolution or less). The skipped set is that of the ``DeepCache`` package's helper with
``cache_branch_id = 3 * branch + layers_per_block`` (its layer-level ids assume at most 2 layers a block).

Under row bands (``parallel.patch``) every worker skips the same modules at the same step (the schedule is a
function of the step alone), so the collectives of the layers that do run stay paired.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from parallel.cache.config import CacheConfig
from parallel.cache.step_cache import StepRecord, full_by_schedule

HOOK = "tessera_deepcache"


def deep_modules(unet: torch.nn.Module, branch: int) -> list[torch.nn.Module]:
    """The modules a reusing step skips, in the order the UNet runs them: ``down_blocks[branch]``'s
    downsamplers, ``down_blocks[branch + 1:]``, the mid block (where the UNet has one),
    ``up_blocks[:-(branch + 1)]``. Raises ValueError naming ``branch`` when it is not one of the UNet's down
    blocks, or leaves nothing to skip."""
    down, up = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if (
        not isinstance(down, torch.nn.ModuleList)
        or not isinstance(up, torch.nn.ModuleList)
        or len(down) != len(up)
    ):
        raise ValueError(
            f"cache.mode: deepcache needs a UNet (as many down_blocks as up_blocks), not a {type(unet).__name__}"
        )
    if isinstance(branch, bool) or not isinstance(branch, int) or not 0 <= branch < len(down):
        raise ValueError(
            f"cache.branch: must be a down block of the UNet, 0 to {len(down) - 1} "
            f"({type(unet).__name__} has {len(down)}), got {branch!r}"
        )
    mid = getattr(unet, "mid_block", None)
    modules = list(getattr(down[branch], "downsamplers", None) or [])
    modules += (
        list(down[branch + 1 :]) + ([mid] if mid is not None else []) + list(up[: len(up) - (branch + 1)])
    )
    if not modules:
        raise ValueError(
            f"cache.branch: {branch} leaves nothing to reuse ({type(unet).__name__} has no mid block)"
        )
    return modules


class _DeepModuleHook(ModelHook):
    """Runs its module and keeps the output on a full step; returns the kept output on a reusing one.

    Outputs are kept per call within a step: a denoiser called more than once per step (guidance branches
    called apart) gets each call's own features back. Calls outside a step (before ``begin_step`` or after
    ``end_step``) run the module and keep nothing."""

    def __init__(self, cache: DeepCache) -> None:
        super().__init__()
        self.cache = cache
        self.outputs: list[Any] = []
        self.calls = 0

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not self.cache.in_step:
            return self.fn_ref.original_forward(*args, **kwargs)
        index, self.calls = self.calls, self.calls + 1
        if self.cache.full:
            output = self.fn_ref.original_forward(*args, **kwargs)
            del self.outputs[index:]
            self.outputs.append(output)
            return output
        if index >= len(self.outputs):
            raise RuntimeError(
                f"DeepCache: call {index + 1} of the denoiser in a reusing step, but the last full step made "
                f"{len(self.outputs)}; the calls per step must not change within a segment"
            )
        return self.outputs[index]


class DeepCache:
    """A ``StepCache`` over a UNet's deep blocks (see ``apply_deepcache``)."""

    def __init__(self, unet: torch.nn.Module, config: CacheConfig, first_step: int) -> None:
        if isinstance(config.interval, bool) or not isinstance(config.interval, int) or config.interval < 1:
            raise ValueError(f"cache.interval: must be an int >= 1, got {config.interval!r}")
        self.unet = unet
        self.config = config
        self.first_step = first_step
        self.modules = deep_modules(unet, config.branch)
        self.record = StepRecord(config.mode)
        self.step = first_step
        self.full = True
        self.in_step = False
        self.cached = False
        """Whether a full step has kept the deep features (a segment's first step is full whatever the
        schedule says: nothing is cached yet, e.g. when a job resumes between two full steps)."""
        self.hooks: list[_DeepModuleHook] = []
        for module in self.modules:
            hook = _DeepModuleHook(self)
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)
            self.hooks.append(hook)
        _invalidate_registry_cache(unet)

    def begin_step(self, step: int) -> None:
        self.step = step
        self.full = not self.cached or full_by_schedule(self.config, step, self.first_step)
        self.in_step = True
        for hook in self.hooks:
            hook.calls = 0

    def end_step(self) -> bool:
        self.in_step = False
        if self.full:
            self.cached = all(hook.outputs for hook in self.hooks)
        self.record.add(self.step, self.full)
        return self.full

    def report(self) -> dict:
        return {**self.record.report(), "branch": self.config.branch, "interval": self.config.interval}

    def close(self) -> None:
        for module, hook in zip(self.modules, self.hooks):
            hook.outputs.clear()
            registry = HookRegistry.check_if_exists_or_initialize(module)
            registry.remove_hook(HOOK, recurse=False)
            if not registry.hooks:
                _drop_empty_registry(module)
        self.hooks = []
        self.cached = False
        _invalidate_registry_cache(self.unet)


def _drop_empty_registry(module: torch.nn.Module) -> None:
    """Leave a module with no hooks left as it was before any: its class's ``forward`` and no registry.

    diffusers' ``remove_hook`` sets the bound original ``forward`` back as an instance attribute, which
    shadows the class's (a later patch of the class method would not reach it) and ties the module to itself
    in a reference cycle."""
    forward = module.__dict__.get("forward")
    if (
        getattr(forward, "__func__", None) is type(module).forward
        and getattr(forward, "__self__", None) is module
    ):
        del module.__dict__["forward"]
    del module._diffusers_hook


def _invalidate_registry_cache(unet: torch.nn.Module) -> None:
    """Hooks added to or removed from the UNet's children stale the child-registry list a registry on the UNet
    itself may have cached (diffusers' cache contexts walk it)."""
    registry = getattr(unet, "_diffusers_hook", None)
    if registry is not None:
        registry.invalidate_child_registries_cache()


def apply_deepcache(unet: torch.nn.Module, config: CacheConfig, first_step: int) -> DeepCache:
    """Attach DeepCache to ``unet`` (a diffusers UNet: ``down_blocks``, ``mid_block``, ``up_blocks``) for a
    segment that starts at step ``first_step``. Full steps are ``full_by_schedule(config, step, first_step)``
    (the first ``warmup_steps``, then every ``config.interval``-th) and the first step after attaching; the
    others recompute only the outer blocks down to ``config.branch`` and reuse the deep ones' outputs."""
    return DeepCache(unet, config, first_step)
