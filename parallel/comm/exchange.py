"""``Comm``: exchanges for patch and CFG parallelism over one process group, with bytes counted per peer.

Every exchange goes through a ``Comm``, which wraps one ``torch.distributed`` process group and
records, for each kind of traffic, how many bytes this worker handed to each peer (keyed by the
peer's *global* rank). For collectives the count is logical: an all-gather counts this rank's
(padded) tensor once per other rank, an all-reduce counts the reduced tensor once per other rank,
whatever algorithm the backend uses underneath.

Kinds used by this package: ``halo`` (conv boundary rows, neighbours only), ``kv`` (self-attention
K/V, point to point to every other band), ``norm`` (GroupNorm statistics all-reduce), ``linear`` (linear
attention's per-head states all-reduce), ``cfg`` (noise exchange between CFG partners), ``ulysses`` (a joint
attention's Q/K/V and outputs between sequence and head shares, HunyuanVideo's Ulysses), ``meta`` (one-off shape
exchange).

Each method returns a ``Pending``: call ``wait()`` to get the result. Synchronous callers wait at
once; displaced mode keeps the ``Pending`` and waits on it in the next step, so the transfer overlaps
the compute in between.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from parallel.comm.counters import BytesSent
from parallel.comm.pending import Pending, done


class Comm:
    """A process group plus per-peer byte counters. Ranks in method arguments are group-local."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.ranks: list[int] = dist.get_process_group_ranks(self.group)
        """Global rank of each group-local rank."""
        self._total: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._step: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    # ---- accounting -------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Start a new 'last step' counter (called at the start of every model forward)."""
        self._step = defaultdict(lambda: defaultdict(int))

    def count(self, kind: str, peer: int, nbytes: int) -> None:
        """Record ``nbytes`` of ``kind`` sent to group-local rank ``peer``."""
        g = self.ranks[peer]
        self._total[kind][g] += nbytes
        self._step[kind][g] += nbytes

    def bytes_sent(self) -> BytesSent:
        def freeze(d: dict[str, dict[int, int]]) -> dict[str, dict[int, int]]:
            return {k: dict(v) for k, v in d.items() if v}

        return BytesSent(total=freeze(self._total), last_step=freeze(self._step))

    # ---- point to point ---------------------------------------------------------------------
    def _op(self, op: Callable, tensor: torch.Tensor, peer: int, tag: int) -> dist.P2POp:
        """A P2POp to group-local ``peer``. Batched through ``batch_isend_irecv`` so that NCCL
        fuses a rank's sends and receives (separate NCCL p2p calls could deadlock); gloo posts them
        one by one."""
        return dist.P2POp(op, tensor, group=self.group, tag=tag, group_peer=peer)

    def _post(
        self,
        recvs: list[dist.P2POp],
        sends: list[dist.P2POp],
        sent: list[torch.Tensor],
        finish: Callable[[], Any],
    ) -> Pending:
        """Post receives then sends in one batch; keep the send handles apart where the backend returns one
        handle per operation (gloo), so ``Pending.release_sends`` can free ``sent`` early."""
        ops = recvs + sends
        works = dist.batch_isend_irecv(ops) if ops else []
        if len(works) == len(ops):
            return Pending(works[: len(recvs)], finish, works[len(recvs) :], sent)
        return Pending(works, finish)

    def exchange_halo(
        self,
        to_prev: torch.Tensor | None,
        to_next: torch.Tensor | None,
        from_prev_shape: tuple[int, ...] | None,
        from_next_shape: tuple[int, ...] | None,
        tag: int,
        like: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> Pending:
        """Swap boundary rows with rank-1 ("prev", the band above) and rank+1 ("next", below) only.

        ``to_prev`` goes to rank-1, ``to_next`` to rank+1; a ``None`` tensor or shape means no
        message in that direction; received tensors get ``like``'s device and ``dtype`` (default ``like``'s). The result is
        ``(from_prev, from_next)``.
        Tags: ``2*tag`` for messages travelling down the bands, ``2*tag+1`` for messages going up.
        """
        recvs, sends, sent = [], [], []
        recv_prev = recv_next = None
        dtype = dtype or like.dtype
        if from_prev_shape is not None:
            recv_prev = torch.empty(from_prev_shape, dtype=dtype, device=like.device)
            recvs.append(self._op(dist.irecv, recv_prev, self.rank - 1, 2 * tag))
        if from_next_shape is not None:
            recv_next = torch.empty(from_next_shape, dtype=dtype, device=like.device)
            recvs.append(self._op(dist.irecv, recv_next, self.rank + 1, 2 * tag + 1))
        if to_next is not None:
            sent.append(to_next.contiguous())
            sends.append(self._op(dist.isend, sent[-1], self.rank + 1, 2 * tag))
            self.count("halo", self.rank + 1, sent[-1].numel() * sent[-1].element_size())
        if to_prev is not None:
            sent.append(to_prev.contiguous())
            sends.append(self._op(dist.isend, sent[-1], self.rank - 1, 2 * tag + 1))
            self.count("halo", self.rank - 1, sent[-1].numel() * sent[-1].element_size())

        def finish() -> tuple[torch.Tensor | None, torch.Tensor | None]:
            sent.clear()  # the send buffers may be freed once the sends completed
            return recv_prev, recv_next

        return self._post(recvs, sends, sent, finish)

    def sendrecv(self, t: torch.Tensor, peer: int, kind: str, tag: int = 0) -> Pending:
        """Send ``t`` to group-local ``peer`` and receive a tensor of the same shape from it."""
        t = t.contiguous()
        out = torch.empty_like(t)
        works = dist.batch_isend_irecv(
            [self._op(dist.irecv, out, peer, tag), self._op(dist.isend, t, peer, tag)]
        )
        self.count(kind, peer, t.numel() * t.element_size())
        return Pending(works, lambda: out)

    def exchange_with_all(self, t: torch.Tensor, sizes: list[int], dim: int, kind: str, tag: int) -> Pending:
        """Send ``t`` to every other rank and receive theirs (size ``sizes[peer]`` along ``dim``), point to
        point. The result lists the tensors in rank order with ``None`` in this rank's slot.

        Unlike an all-gather, nothing is padded to the tallest band and no buffer is allocated for this
        rank's own part, and gloo makes no flat staging copy: in displaced mode these buffers live from
        one step to the next for every attention layer, so that is the mode's resident memory.
        """
        t = t.contiguous()
        dim = dim % t.dim()
        received: list[torch.Tensor | None] = [None] * self.world
        recvs, sends = [], []
        for peer in range(self.world):
            if peer == self.rank:
                continue
            shape = list(t.shape)
            shape[dim] = sizes[peer]
            received[peer] = t.new_empty(shape)
            recvs.append(self._op(dist.irecv, received[peer], peer, tag))
            sends.append(self._op(dist.isend, t, peer, tag))
            self.count(kind, peer, t.numel() * t.element_size())
        sent = [t]

        def finish() -> list[torch.Tensor | None]:
            sent.clear()  # the send buffer may be freed once the sends completed
            return received

        return self._post(recvs, sends, sent, finish)

    def all_to_all(self, parts: list[torch.Tensor], shapes: list[tuple[int, ...]], kind: str, tag: int) -> Pending:
        """Send ``parts[peer]`` to every other rank and receive a tensor of ``shapes[peer]`` from it, point to point
        (an all-to-all whose parts may differ in size: uneven bands). The result lists the tensors in rank order,
        this rank's own part in its slot."""
        received: list[torch.Tensor] = [parts[self.rank]] * self.world
        recvs, sends, sent = [], [], []
        for peer in range(self.world):
            if peer == self.rank:
                continue
            received[peer] = parts[peer].new_empty(shapes[peer])
            recvs.append(self._op(dist.irecv, received[peer], peer, tag))
            sent.append(parts[peer].contiguous())
            sends.append(self._op(dist.isend, sent[-1], peer, tag))
            self.count(kind, peer, sent[-1].numel() * sent[-1].element_size())

        def finish() -> list[torch.Tensor]:
            sent.clear()  # the send buffers may be freed once the sends completed
            return received

        return self._post(recvs, sends, sent, finish)

    # ---- collectives ------------------------------------------------------------------------
    def all_gather_uneven(self, t: torch.Tensor, sizes: list[int], dim: int, kind: str) -> Pending:
        """All-gather tensors whose size along ``dim`` is ``sizes[rank]``; result: list in rank order."""
        if self.world == 1:
            return done([t])
        dim = dim % t.dim()
        tallest = max(sizes)
        t = t.contiguous()
        if t.shape[dim] < tallest:
            shape = list(t.shape)
            shape[dim] = tallest - t.shape[dim]
            t = torch.cat([t, t.new_zeros(shape)], dim=dim)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        work = dist.all_gather(parts, t, group=self.group, async_op=True)
        nbytes = t.numel() * t.element_size()
        for peer in range(self.world):
            if peer != self.rank:
                self.count(kind, peer, nbytes)
        return Pending([work], lambda: [p.narrow(dim, 0, n) for p, n in zip(parts, sizes)])

    def all_reduce_sum(self, t: torch.Tensor, kind: str) -> Pending:
        """Sum ``t`` over the group (into a copy; ``t`` itself is left alone)."""
        if self.world == 1:
            return done(t)
        buf = t.clone()
        work = dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
        nbytes = buf.numel() * buf.element_size()
        for peer in range(self.world):
            if peer != self.rank:
                self.count(kind, peer, nbytes)
        return Pending([work], lambda: buf)

    def all_gather_ints(self, values: list[int], device: torch.device | str = "cpu") -> list[list[int]]:
        """Blocking all-gather of a few ints per rank (shapes); counted as ``meta``."""
        t = torch.tensor(values, dtype=torch.int64, device=device)
        parts = self.all_gather_uneven(t, [len(values)] * self.world, 0, "meta").wait()
        return [p.tolist() for p in parts]
