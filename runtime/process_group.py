"""Per-job torch.distributed process groups over Ray workers.

The group rendezvous at the first worker's node address (never a hard-coded localhost) on a port
that worker found free, so a group can span Ray nodes. Every collective has a timeout, so a hung
peer becomes an error instead of a hang. A worker is in at most one job group at a time; the group
is destroyed when the job ends and a new one is formed for the next job.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist


@dataclass(frozen=True)
class GroupSpec:
    master_addr: str
    """Node address of rank 0, where the TCP store listens."""
    master_port: int
    """Port rank 0 found free."""
    world_size: int
    """Number of workers in the group."""
    backend: str
    """"gloo" on CPU, "nccl" on CUDA."""
    timeout_s: float
    """Seconds before a rendezvous or collective gives up with an error."""


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def join(spec: GroupSpec, rank: int) -> None:
    """Join the job's default process group as `rank` (run inside the worker)."""
    if dist.is_initialized():
        raise RuntimeError("this worker is already in a process group; leave it first")
    try:
        dist.init_process_group(
            backend=spec.backend,
            init_method=f"tcp://{spec.master_addr}:{spec.master_port}",
            world_size=spec.world_size,
            rank=rank,
            timeout=timedelta(seconds=spec.timeout_s),
        )
    except Exception:
        _forget_failed_rendezvous()
        raise


def _forget_failed_rendezvous() -> None:
    """Undo the group counter a failed init_process_group leaves behind.

    torch numbers groups in its store keys (/default_pg/<count>/...) and bumps the count even when
    the rendezvous fails, while only destroy_process_group resets it. Without this, the next group
    this worker joins waits on keys its peers never write, and times out.
    """
    world = getattr(dist.distributed_c10d, "_world", None)
    if world is not None and not dist.is_initialized():
        world.group_count = 0


def leave() -> bool:
    """Destroy the worker's process group, if any; returns whether there was one."""
    if not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True
