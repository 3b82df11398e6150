"""The device mesh diffusers' context parallelism runs on, laid over a given process group.

diffusers builds its mesh with ``init_device_mesh`` over the whole world unless it is handed one
(``ContextParallelConfig.mesh``), and that only works when ``ulysses x ring`` is the world size. We
hand it a mesh over the job's group instead: ``replicas`` consecutive blocks of ``ring x ulysses`` group
ranks, each block one copy of the model splitting its sequence. Two replicas are CFG parallelism's layout
(``parallel.patch.cfg``): the first half of the group runs the conditional branch, the second half the
unconditional one, and group rank ``i`` and ``i + N`` are partners.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from parallel.sequence.config import SequenceConfig

REPLICA, RING, ULYSSES = "replica", "ring", "ulysses"
"""Mesh dimension names; diffusers looks up "ring" and "ulysses" and leaves any other dimension alone."""


def sequence_mesh(
    group: dist.ProcessGroup, config: SequenceConfig, replicas: int = 1, device_type: str = "cpu"
) -> DeviceMesh:
    """A ``(replica, ring, ulysses)`` mesh over ``group``'s ranks (``(ring, ulysses)`` for one replica).

    Collective: the mesh creates its sub-groups with ``dist.new_group``, so every rank of ``group`` calls
    it with the same arguments; as for any ``new_group``, when ``group`` is a subgroup of WORLD the other
    WORLD ranks must make the same calls (torch requirement).
    """
    ranks = dist.get_process_group_ranks(group)
    if len(ranks) != replicas * config.degree:
        raise ValueError(
            f"the group has {len(ranks)} workers, but {replicas} replica(s) of ulysses {config.ulysses} x "
            f"ring {config.ring} need {replicas * config.degree}"
        )
    layout = torch.tensor(ranks, dtype=torch.int).view(replicas, config.ring, config.ulysses)
    if replicas == 1:
        return DeviceMesh(device_type, layout[0], mesh_dim_names=(RING, ULYSSES))
    return DeviceMesh(device_type, layout, mesh_dim_names=(REPLICA, RING, ULYSSES))
