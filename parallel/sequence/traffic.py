"""Bytes sent by diffusers' context parallelism, counted as its collectives run.

diffusers calls torch's functional collectives (``torch.distributed._functional_collectives``) from its
split/gather hooks and its Ulysses and Ring attention; they reach us as ``_c10d_functional`` ops, which
a ``TorchDispatchMode`` active during the model's forward sees with their inputs and groups. A rank's
bytes to a peer are its data that peer receives: for an all-to-all the peer's slice of the input, for an
all-gather the whole input (how gloo or NCCL route it between the ranks is theirs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from parallel.comm import BytesSent

_ALL_TO_ALL = torch.ops._c10d_functional.all_to_all_single.default
_ALL_GATHER = torch.ops._c10d_functional.all_gather_into_tensor.default
_NOT_SENT = ("wait_tensor", "_wrap_tensor_autograd")
"""``_c10d_functional`` ops that move no data."""

KIND = {_ALL_TO_ALL: "all_to_all", _ALL_GATHER: "all_gather"}
"""Traffic kinds: Ulysses swaps sequence and head shards by all-to-all; Ring gathers key/value shards and
the model's output is gathered from its sequence shards, both by all-gather."""


class CollectiveBytes(TorchDispatchMode):
    """Counts the bytes each functional collective run under it sends, into ``sent`` (by kind and peer)."""

    def __init__(self, sent: BytesSent, rank: int, group_ranks: Callable[[str], list[int]]) -> None:
        super().__init__()
        self.sent = sent
        self.rank = rank
        """This process's global rank."""
        self.group_ranks = group_ranks
        """Group name -> the global ranks of that group, in group order."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "_c10d_functional" and func._opname not in _NOT_SENT:
            self._count(func, args)
        return func(*args, **kwargs)

    def _count(self, func, args: tuple) -> None:
        tensor, group_name = args[0], args[-1]
        ranks = self.group_ranks(group_name)
        nbytes = tensor.numel() * tensor.element_size()
        if func is _ALL_TO_ALL and args[2]:  # input split sizes along dim 0, one per group rank
            per_row = nbytes // max(1, tensor.shape[0])
            to_peer = [rows * per_row for rows in args[2]]
        elif func is _ALL_TO_ALL:
            to_peer = [nbytes // len(ranks)] * len(ranks)
        else:  # an all-gather, or another collective: every peer gets this rank's whole input
            to_peer = [nbytes] * len(ranks)
        kind = KIND.get(func, func._opname)
        for peer, n in zip(ranks, to_peer):
            if peer != self.rank and n:
                for book in (self.sent.total, self.sent.last_step):
                    peers = book.setdefault(kind, {})
                    peers[peer] = peers.get(peer, 0) + n


def count_forward_bytes(
    model: torch.nn.Module, sent: BytesSent, rank: int, group_ranks: Callable[[str], list[int]]
) -> Callable[[], None]:
    """Count the collective bytes of every forward of ``model`` into ``sent`` (``last_step``: the last
    forward). Returns the function that stops counting."""
    active: list[CollectiveBytes] = []

    def enter(_module, _args) -> None:
        sent.last_step = {}
        mode = CollectiveBytes(sent, rank, group_ranks)
        mode.__enter__()
        active.append(mode)

    def leave(_module, _args, _output) -> None:
        if active:  # also after a forward that raised (always_call)
            active.pop().__exit__(None, None, None)

    hooks = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]

    def stop() -> None:
        for hook in hooks:
            hook.remove()

    return stop
