"""Apply diffusers' own context parallelism (Ulysses, Ring) to a model on a given process group, and undo it.

After ``parallelize_sequence``, every rank of a replica calls the model on the whole input, as on one
device; the model's context-parallel plan (diffusers' ``_cp_plan``, or one a caller hands in) splits the
token sequence at its entry, attention runs over the split sequence (Ulysses: all-to-all to head shards
and back; Ring: key/value shards passed around), and the output is gathered, so every rank returns the
whole output. Everything but the mesh, the attention backend and the CPU gaps (``parallel.sequence.cpu``)
is diffusers' ``enable_parallelism``, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from parallel.comm import BytesSent
from parallel.dtype import compute_dtype
from parallel.sequence.config import SequenceConfig
from parallel.sequence.cpu import accelerator_count_for_diffusers, register_cpu_flash_attention
from parallel.sequence.mesh import REPLICA, sequence_mesh
from parallel.sequence.traffic import count_forward_bytes

RING_BACKEND = "_native_flash"
"""The attention backend Ring runs on: Ring merges partial attentions by their log-sum-exp, which diffusers'
"native" (SDPA) backend cannot return; torch's flash kernel can (CUDA: half precision only)."""
ULYSSES_FALLBACK = "native"
"""The backend Ulysses runs on when the model's own cannot take context parallelism (xformers)."""


@dataclass
class SequenceHandle:
    """A model under diffusers' context parallelism: its mesh, its traffic, and how to undo it."""

    model: nn.Module
    config: SequenceConfig
    mesh: DeviceMesh
    """The mesh handed to diffusers (``parallel.sequence.mesh``)."""
    replica: int
    """Which replica (block of ``config.degree`` group ranks) this rank belongs to."""
    bytes_sent: BytesSent = field(default_factory=BytesSent)
    """Bytes this rank sent in diffusers' collectives, by kind and peer global rank."""
    notes: list[str] = field(default_factory=list)
    """What enabling it took beyond diffusers' own call (an attention backend, the CPU gaps)."""
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def remove(self) -> None:
        """Restore the model: no hooks, no parallel config, its own attention backends."""
        while self._undo:
            self._undo.pop()()


def parallelize_sequence(
    model: nn.Module,
    group: dist.ProcessGroup,
    config: SequenceConfig,
    replicas: int = 1,
    plan: dict[str, Any] | None = None,
) -> SequenceHandle:
    """Split ``model``'s sequence over ``group`` (``replicas`` copies of ``config.degree`` ranks each).

    ``plan``: a context-parallel plan in diffusers' format for a model whose class has none (default: the
    class's ``_cp_plan``). Collective over ``group`` (see ``sequence_mesh``). Raises ValueError when the
    model has no plan or its attention cannot take context parallelism.
    """
    from diffusers.hooks.context_parallel import remove_context_parallel
    from diffusers.models._modeling_parallel import ContextParallelConfig

    plan = plan if plan is not None else getattr(model, "_cp_plan", None)
    if plan is None:
        raise ValueError(f"{type(model).__name__} has no context-parallel plan (_cp_plan) and none was given")
    if getattr(model, "_parallel_config", None) is not None:
        raise ValueError(f"{type(model).__name__} is already parallel: remove its handle first")
    device_type = next(model.parameters()).device.type
    handle = SequenceHandle(model, config, sequence_mesh(group, config, replicas, device_type), 0)
    if replicas > 1:
        handle.replica = handle.mesh.get_local_rank(REPLICA)
    try:
        _use_backend(model, config, device_type, handle)
        # undone even if enable_parallelism stops half way (it records its config before adding hooks)
        handle._undo.append(lambda: _disable(model, plan, remove_context_parallel))
        cp_config = ContextParallelConfig(
            ulysses_degree=config.ulysses, ring_degree=config.ring, mesh=handle.mesh
        )
        with accelerator_count_for_diffusers() as note:
            model.enable_parallelism(config=cp_config, cp_plan=plan)
        handle.notes += [note] if note else []
        _check_attention_took_it(model)
        cp = model._parallel_config.context_parallel_config
        ranks = {
            g.group_name: dist.get_process_group_ranks(g)
            for g in (m.get_group() for m in (cp._ring_mesh, cp._ulysses_mesh, cp._flattened_mesh))
        }
        handle._undo.append(count_forward_bytes(model, handle.bytes_sent, dist.get_rank(), ranks.__getitem__))
    except BaseException:
        handle.remove()
        raise
    return handle


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention, MochiAttention

    kinds = (Attention, MochiAttention, AttentionModuleMixin)  # what diffusers' enable_parallelism visits
    return [m for m in model.modules() if isinstance(m, kinds)]


def _use_backend(model: nn.Module, config: SequenceConfig, device_type: str, handle: SequenceHandle) -> None:
    """Put every attention on a backend that takes the config (see RING_BACKEND), remembering the old ones."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    processors = [
        m.processor for m in _attention_modules(model) if hasattr(m.processor, "_attention_backend")
    ]
    if not processors:
        return
    if config.ring > 1:
        if device_type == "cpu":
            note = register_cpu_flash_attention()
            handle.notes += [note] if note else []
        elif compute_dtype(model) == torch.float32:
            raise ValueError(
                "Ring attention needs an attention kernel returning log-sum-exp; diffusers' (flash, cuDNN) run in "
                "float16/bfloat16 only on CUDA: use a half-precision dtype or Ulysses alone (ring 1)"
            )
        wanted = RING_BACKEND
    else:
        current = processors[0]._attention_backend or _AttentionBackendRegistry.get_active_backend()[0]
        capable = _AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(current))
        wanted = None if capable else ULYSSES_FALLBACK
    if wanted is None:
        return
    before = [p._attention_backend for p in processors]
    # set_attention_backend also makes its backend the process's active one, which processors left at None
    # (diffusers' default) use: restored too, or a later job on this worker would run on Ring's backend
    active = _AttentionBackendRegistry._active_backend

    def restore() -> None:
        for processor, backend in zip(processors, before):
            processor._attention_backend = backend
        _AttentionBackendRegistry.set_active_backend(active)

    handle._undo.append(restore)
    model.set_attention_backend(wanted)
    handle.notes.append(f"attention backend {wanted!r} while sequence-parallel")


def _check_attention_took_it(model: nn.Module) -> None:
    """diffusers hands the parallel config to processors that have a slot for it and skips the rest, which
    would then attend over their shard alone: refuse such a model instead of computing something else."""
    left_out = {
        type(m.processor).__name__
        for m in _attention_modules(model)
        if getattr(m.processor, "_parallel_config", None) is None
    }
    if left_out:
        raise ValueError(
            f"attention processors {sorted(left_out)} do not take diffusers' context parallelism"
        )


def _disable(model: nn.Module, plan: dict, remove_context_parallel: Callable) -> None:
    """The inverse of ``enable_parallelism`` (diffusers has none): its hooks, then the config it recorded."""
    remove_context_parallel(model, plan)
    for module in _attention_modules(model):
        if getattr(module.processor, "_parallel_config", None) is not None:
            module.processor._parallel_config = None
    model._parallel_config = None
