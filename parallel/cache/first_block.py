"""First Block Cache for transformers, on diffusers' own hooks, with the decision taken by the whole job.

diffusers (``diffusers.hooks.first_block_cache``) already runs the first block, compares its residual with the
last full step's and, when it changed little, adds the other blocks' residual from that step instead of running
them. What it lacks for a job spread over workers: each worker would compare only its own row band, sequence
shard or guidance branch and could decide differently from its peers, and the next collective would then pair
mismatched calls. Here the comparison is summed over the job's process group first
(``step_cache.group_relative_change``), so every worker takes the same decision, equal to one device's. It also
forces the first ``warmup_steps`` of a segment and every ``max_skips + 1``-th step in a row to run in full.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks.first_block_cache import FBCBlockHook, FBCHeadBlockHook, FBCSharedBlockState
from diffusers.hooks.hooks import CacheContext, StateManager

from parallel.cache.config import CacheConfig, stack_blocks_error
from parallel.cache.step_cache import StepRecord, group_relative_change

HEAD_HOOK = "tessera_first_block_head"
BLOCK_HOOK = "tessera_first_block_rest"


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks in the order its forward runs them (the ModuleLists diffusers' caches
    recognise: ``transformer_blocks`` then ``single_transformer_blocks``, ``blocks``...)."""
    blocks = []
    for name, child in model.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList):
            blocks += list(child)
    return blocks


class _GroupDecidedHeadHook(FBCHeadBlockHook):
    """diffusers' head-block hook, asking the step cache (not its own threshold test) whether to compute."""

    def __init__(self, state_manager: StateManager, cache: FirstBlockCache) -> None:
        super().__init__(state_manager, cache.config.threshold)
        self.cache = cache

    def _should_compute_remaining_blocks(self, hidden_states_residual: torch.Tensor) -> bool:
        previous = self.state_manager.get_state().head_block_residual
        return self.cache.decide(hidden_states_residual, previous)


class StackCache:
    """What a cache over a transformer's block stack keeps, whichever hook decides on the first block: diffusers' First
    Block Cache hooks on the other blocks (they pass their inputs through on a reusing step; the last records the
    stack's residual on a full step), the step record and the measured changes. Subclasses set ``head_hook`` and
    ``decide``."""

    head_hook: str = ""
    rest_hook: str = ""

    def __init__(self, model: torch.nn.Module, config: CacheConfig, first_step: int, head: type) -> None:
        blocks = transformer_blocks(model)
        problem = stack_blocks_error(config.mode, len(blocks), type(model).__name__)
        if problem is not None:
            raise ValueError(f"cache.mode: {problem}")
        self.config = config
        self.first_step = first_step
        self.blocks = blocks
        self.record = StepRecord(config.mode)
        self.state = StateManager(FBCSharedBlockState)
        self.state.set_context(CacheContext("render"))
        self.step = first_step
        self.skips_in_a_row = 0
        self.full = True
        self.changes: dict[int, float] = {}
        """Step -> the group's relative change the decision measured there."""
        HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(head(self.state, self), self.head_hook)
        for index, block in enumerate(blocks[1:], start=1):
            hook = FBCBlockHook(self.state, is_tail=index == len(blocks) - 1)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, self.rest_hook)

    def begin_step(self, step: int) -> None:
        self.step = step
        self.full = True

    def end_step(self) -> bool:
        self.skips_in_a_row = 0 if self.full else self.skips_in_a_row + 1
        self.record.add(self.step, self.full)
        return self.full

    def report(self) -> dict:
        return {
            **self.record.report(),
            "threshold": self.config.threshold,
            "max_skips": self.config.max_skips,
            "changes": dict(self.changes),
        }

    def close(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.blocks[0]).remove_hook(self.head_hook, recurse=False)
        for block in self.blocks[1:]:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(self.rest_hook, recurse=False)
        self.state.reset()


class FirstBlockCache(StackCache):
    """A ``StepCache`` over a transformer's blocks (see ``apply_first_block_cache``)."""

    head_hook = HEAD_HOOK
    rest_hook = BLOCK_HOOK

    def __init__(self, model: torch.nn.Module, config: CacheConfig, first_step: int) -> None:
        super().__init__(model, config, first_step, _GroupDecidedHeadHook)

    def decide(self, residual: torch.Tensor, previous: torch.Tensor | None) -> bool:
        """Whether this step runs the other blocks: forced (identically on every worker) or by the group's
        relative change of the first block's residual. Called once per denoiser call by the head hook."""
        forced = (
            previous is None
            or self.step - self.first_step < self.config.warmup_steps
            or self.skips_in_a_row >= self.config.max_skips
        )
        if forced:
            self.full = True
        else:
            change = group_relative_change(residual - previous, previous)
            self.changes[self.step] = round(change, 6)
            self.full = change > self.config.threshold
        return self.full


def apply_first_block_cache(model: torch.nn.Module, config: CacheConfig, first_step: int) -> FirstBlockCache:
    """Attach a first-block cache to ``model`` (a diffusers transformer whose block classes diffusers' block
    registry knows) for a segment that starts at step ``first_step``."""
    return FirstBlockCache(model, config, first_step)
