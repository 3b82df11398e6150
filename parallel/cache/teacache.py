"""TeaCache-style caching for transformers: skip the whole block stack while its input has changed little.

TeaCache (Liu et al., 2024) watches the first block's timestep-modulated input: while its relative L1 change,
accumulated over the steps since the last full one, stays under a threshold, the stack's residual from that full
step (its output minus its input) is added to the input instead of running any block. Unlike First Block Cache it
does not run the first block to decide, so a reusing step costs only the embedders and the output layers.

diffusers has the pieces but not this cache: First Block Cache's block hooks (``FBCBlockHook``: the blocks after
the first pass their inputs through on a reusing step, and the last one records the residual on a full step) are
reused as they are; what is written here is the head hook that decides from the modulated input before the first
block runs. diffusers' SeaCache decides from an input too, but by a spectral filter of the whole latent, which a row
band or a sequence shard cannot compute alone; TeaCache's L1 change can be summed over the job's group
(``step_cache.group_relative_change``), so every worker takes one device's decision, as with ``first_block``.

The modulated input is the first block's ``norm1(hidden_states, emb=temb)[0]`` where the block has an AdaLN-Zero
``norm1`` that takes the time embedding (Flux, SD3, Qwen-Image); elsewhere (PixArt, Sana, whose modulation is
inside the block's forward) it is the block's input hidden states. TeaCache's per-model polynomial rescaling of
the change is left out: the threshold is per model anyway, and ``cache.min_psnr`` calibrates it.
"""

from __future__ import annotations

import inspect

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.first_block_cache import FBCSharedBlockState
from diffusers.hooks.hooks import StateManager
from diffusers.utils.torch_utils import unwrap_module

from parallel.cache.config import CacheConfig
from parallel.cache.first_block import StackCache
from parallel.cache.step_cache import group_relative_change

HEAD_HOOK = "tessera_teacache_head"
BLOCK_HOOK = "tessera_teacache_rest"


def _takes_embedding(norm: torch.nn.Module) -> bool:
    """Whether ``norm`` is an AdaLN whose forward takes the time embedding ``emb`` (and returns a tuple)."""
    try:
        return "emb" in inspect.signature(norm.forward).parameters
    except (TypeError, ValueError):
        return False


class _HeadHook(ModelHook):
    """On the first block: decide for the whole stack from its modulated input, before it runs."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager, cache: TeaCache) -> None:
        super().__init__()
        self.state_manager = state_manager
        self.cache = cache
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = TransformerBlockRegistry.get(unwrap_module(module).__class__)
        return module

    def _get(self, name: str, args, kwargs):
        try:
            return self._metadata._get_parameter_from_args_kwargs(name, args, kwargs)
        except (ValueError, KeyError, IndexError):  # the block's forward has no such parameter
            return None

    def _modulated(self, module, hidden: torch.Tensor, args, kwargs) -> torch.Tensor:
        norm = getattr(unwrap_module(module), "norm1", None)
        temb = self._get("temb", args, kwargs)
        if norm is not None and temb is not None and _takes_embedding(norm):
            out = norm(hidden, emb=temb)
            return out[0] if isinstance(out, tuple) else out
        return hidden

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        metadata = self._metadata
        hidden = self._get(metadata.hidden_states_argument_name, args, kwargs)
        encoder = None
        if metadata.return_encoder_hidden_states_index is not None:
            encoder = self._get(metadata.encoder_hidden_states_argument_name, args, kwargs)
        state: FBCSharedBlockState = self.state_manager.get_state()
        compute = self.cache.decide(self._modulated(module, hidden, args, kwargs), state.tail_block_residuals is None)
        state.should_compute = compute
        if compute:  # the last block's hook takes the stack's residual against this input
            state.head_block_output = hidden if encoder is None else (hidden, encoder)
            return self.fn_ref.original_forward(*args, **kwargs)
        hidden_out = hidden + state.tail_block_residuals[0]
        if encoder is None:
            return hidden_out
        output = [None, None]
        output[metadata.return_hidden_states_index] = hidden_out
        output[metadata.return_encoder_hidden_states_index] = encoder + state.tail_block_residuals[1]
        return tuple(output)

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class TeaCache(StackCache):
    """A ``StepCache`` over a transformer's block stack (see ``apply_teacache``)."""

    head_hook = HEAD_HOOK
    rest_hook = BLOCK_HOOK

    def __init__(self, model: torch.nn.Module, config: CacheConfig, first_step: int) -> None:
        super().__init__(model, config, first_step, _HeadHook)
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None
        self.decided = False

    def decide(self, modulated: torch.Tensor, nothing_cached: bool) -> bool:
        """Whether this step runs the stack: forced (identically on every worker) or by the accumulated change of
        the modulated input, summed over the group. Called once per denoiser call."""
        if self.decided:  # a second call in one step (none of Tessera's samplers makes one) decides alike
            return self.full
        change = None
        if self.previous is not None and self.previous.shape == modulated.shape:
            change = group_relative_change(modulated - self.previous, self.previous)
            self.changes[self.step] = round(change, 6)
        self.previous = modulated.detach().clone()
        forced = (
            nothing_cached
            or change is None
            or self.step - self.first_step < self.config.warmup_steps
            or self.skips_in_a_row >= self.config.max_skips
        )
        if forced or self.accumulated + change >= self.config.threshold:
            self.full, self.accumulated = True, 0.0
        else:
            self.full, self.accumulated = False, self.accumulated + change
        self.decided = True
        return self.full

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        self.decided = False

    def close(self) -> None:
        super().close()
        self.previous = None


def apply_teacache(model: torch.nn.Module, config: CacheConfig, first_step: int) -> TeaCache:
    """Attach a TeaCache-style cache to ``model`` (a diffusers transformer whose block classes diffusers' block
    registry knows) for a segment that starts at step ``first_step``."""
    return TeaCache(model, config, first_step)
