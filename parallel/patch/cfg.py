"""CFG parallelism: the conditional and unconditional branches on different workers.

With ``2*N`` workers in ``group``, group ranks ``[0, N)`` run the conditional branch and ``[N, 2N)``
the unconditional one. Each half is its own patch group of ``N`` workers (band ``i`` on half-rank
``i``); rank ``i`` and rank ``i + N`` hold the same band and are CFG partners. After every model
forward, partners swap their noise predictions (point-to-point, one band each) and both compute
``uncond + g * (cond - uncond)`` (or the combination the caller hands in), so both keep an identical copy of
the guided band and step the sampler identically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from parallel.comm import Comm

CFG_TAG = 7_000_001
"""p2p tag of the partner exchange, far from the layer tags used by the patch layers."""


@dataclass
class CFGLayout:
    """Where this worker sits in a (2 branches) x (N bands) layout."""

    branch: str
    """"cond" (group ranks [0, N)) or "uncond" (group ranks [N, 2N))."""
    patch_group: dist.ProcessGroup
    """The N workers of this branch: pass it to ``parallelize_*_patch``."""
    patch_rank: int
    """This worker's rank in ``patch_group``, i.e. the index of its band."""
    patch_degree: int
    """N, the number of bands."""
    partner: int
    """Global rank of the worker holding the same band in the other branch."""
    comm: Comm
    """Communicator over the whole CFG group; counts the ``cfg`` bytes sent to the partner."""

    @property
    def is_cond(self) -> bool:
        return self.branch == "cond"


def make_cfg_groups(group: dist.ProcessGroup | None = None) -> CFGLayout:
    """Split ``group`` (default WORLD) into a conditional and an unconditional patch group.

    Collective: every rank of ``group`` must call it. Both subgroups are created with
    ``dist.new_group`` in the same order on every rank; as for any ``new_group``, when ``group`` is a
    subgroup of WORLD the other WORLD ranks must make the same calls (torch requirement).
    """
    comm = Comm(group)
    world = comm.world
    if world < 2 or world % 2:
        raise ValueError(
            f"CFG parallelism needs an even worker count (degree >= 2: one half per branch), got degree={world}"
        )
    n = world // 2
    cond_ranks, uncond_ranks = comm.ranks[:n], comm.ranks[n:]
    cond_group = dist.new_group(cond_ranks)
    uncond_group = dist.new_group(uncond_ranks)
    is_cond = comm.rank < n
    patch_rank = comm.rank % n
    return CFGLayout(
        branch="cond" if is_cond else "uncond",
        patch_group=cond_group if is_cond else uncond_group,
        patch_rank=patch_rank,
        patch_degree=n,
        partner=(uncond_ranks if is_cond else cond_ranks)[patch_rank],
        comm=comm,
    )


Combine = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""(uncond, cond, guidance scale) -> guided prediction."""


def swap_branches(local: torch.Tensor, layout: CFGLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap this worker's branch output with its partner's: (unconditional, conditional) on both partners."""
    partner_local = layout.comm.ranks.index(layout.partner)
    other = layout.comm.sendrecv(local, partner_local, "cfg", tag=CFG_TAG).wait()
    return (other, local) if layout.is_cond else (local, other)


def combine_cfg(
    noise_local: torch.Tensor, layout: CFGLayout, guidance_scale: float, combine: Combine | None = None
) -> torch.Tensor:
    """Swap this band's noise prediction with the partner and return the guided noise.

    Both partners return bitwise the same tensor: ``uncond + guidance_scale * (cond - uncond)``, or
    ``combine(uncond, cond, guidance_scale)`` when the model guides otherwise (a model family's rule).
    """
    uncond, cond = swap_branches(noise_local, layout)
    if combine is not None:
        return combine(uncond, cond, guidance_scale)
    return uncond + guidance_scale * (cond - uncond)
