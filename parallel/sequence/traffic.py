"""Bytes sent by diffusers' context parallelism, counted as its collectives run.

diffusers calls torch's functional collectives (``torch.distributed._functional_collectives``) from its
split/gather hooks and its Ulysses and Ring attention; they reach us as ``_c10d_functional`` ops, which
a ``TorchDispatchMode`` active during the model's forward sees with their inputs and groups. A rank's
bytes to a peer are its data that peer receives: for an all-to-all the peer's slice of the input, for an
all-gather the whole input (how gloo or NCCL route it between the ranks is theirs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    """Counts the bytes each functional collective run under it sends, into ``sent.total`` (by kind and peer)."""

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
                peers = self.sent.total.setdefault(kind, {})
                peers[peer] = peers.get(peer, 0) + n


def _shapes(args: tuple, kwargs: dict) -> tuple:
    """The forward's tensor inputs by position and name: what diffusers' collectives depend on."""

    def of(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        if isinstance(value, (list, tuple)):
            return tuple(of(v) for v in value)
        return None

    return of(args), tuple(sorted((name, of(value)) for name, value in kwargs.items()))


def count_forward_bytes(
    model: torch.nn.Module, sent: BytesSent, rank: int, group_ranks: Callable[[str], list[int]]
) -> Callable[[], None]:
    """Count the collective bytes of every forward of ``model`` into ``sent`` (``last_step``: the last
    forward). Returns the function that stops counting.

    The first forward of each input shape runs under ``CollectiveBytes``; a later forward of the same
    shapes makes the same collectives, so its bytes are added without it (the mode costs Python time on
    every op: about 10% of a small DiT's forward on one CPU thread)."""
    known: dict[tuple, dict[str, dict[int, int]]] = {}
    measuring: list[tuple[tuple, BytesSent, CollectiveBytes]] = []

    def add(book: dict[str, dict[int, int]], counts: dict[str, dict[int, int]]) -> None:
        for kind, peers in counts.items():
            into = book.setdefault(kind, {})
            for peer, n in peers.items():
                into[peer] = into.get(peer, 0) + n

    def enter(_module, args, kwargs) -> None:
        key = _shapes(args, kwargs)
        if key in known:
            sent.last_step = {kind: dict(peers) for kind, peers in known[key].items()}
            add(sent.total, known[key])
            return
        measured = BytesSent()
        mode = CollectiveBytes(measured, rank, group_ranks)
        mode.__enter__()
        measuring.append((key, measured, mode))

    def finished(_module, _args, _kwargs, _output) -> None:
        if measuring:
            key, measured, mode = measuring.pop()
            mode.__exit__(None, None, None)
            known[key] = measured.total
            sent.last_step = {kind: dict(peers) for kind, peers in measured.total.items()}
            add(sent.total, measured.total)

    def raised(_module, _args, _output) -> None:
        if measuring:  # the forward raised before ``finished``: leave the mode, remember nothing
            measuring.pop()[2].__exit__(None, None, None)

    hooks = [
        model.register_forward_pre_hook(enter, with_kwargs=True),
        model.register_forward_hook(finished, with_kwargs=True),
        model.register_forward_hook(raised, always_call=True),
    ]

    def stop() -> None:
        for hook in hooks:
            hook.remove()

    return stop
