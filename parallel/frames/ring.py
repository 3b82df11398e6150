"""Stage-to-stage ring of the frame pipeline: isend/irecv with one receive posted ahead.

Stage s sends hidden states to s+1; the last stage sends the model output back to stage 0, which
owns the latents and the samplers; that closes the ring. A send is not waited on before the next
compute, and the receive of the *next* message is posted before the current item computes, so
transfers overlap compute in both directions. Gloo marks a send complete only once it is waited on,
so a sender waits on its oldest send once more than ``max_inflight`` are out: memory stays bounded
however long the video. That wait cannot deadlock because stage 0 posts the receive of every output
it will need as soon as it forwards the item (gloo matches same-tag messages from a peer in order).
Bytes sent are counted per peer (global rank), as ``parallel.comm`` does for patch parallelism.
With a ``FrameTrace``, every post, send and wait is logged with the message's sequence number.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist

from parallel.frames.trace import FrameTrace


class RingChannel:
    """Ordered messages of a known shape from one peer (group-local rank ``src``), one receive posted ahead."""

    def __init__(
        self,
        group: dist.ProcessGroup,
        src: int,
        tag: int,
        shape: tuple[int, ...],
        dtype,
        device,
        trace: FrameTrace | None = None,
        name: str = "",
    ):
        self.group, self.src, self.tag = group, src, tag
        self.shape, self.dtype, self.device = shape, dtype, device
        self.trace, self.name = trace, name
        self._posted: deque[tuple[object, torch.Tensor]] = deque()
        self._posts = self._takes = 0  # sequence numbers of the next post and the next take

    def post(self, shape: tuple[int, ...] | None = None) -> None:
        """Post the receive of the next message (call as early as it is known to be coming); ``shape``: that
        message's, when it is not the channel's (the poster must know it: gloo needs the size up front)."""
        buf = torch.empty(self.shape if shape is None else shape, dtype=self.dtype, device=self.device)
        work = dist.irecv(buf, group=self.group, group_src=self.src, tag=self.tag)
        self._posted.append((work, buf))
        if self.trace is not None:
            self.trace.add(f"post:{self.name}", self._posts)
        self._posts += 1

    def take(self) -> torch.Tensor:
        """The oldest posted message, waiting for it if needed."""
        if not self._posted:
            self.post()
        work, buf = self._posted.popleft()
        work.wait()
        if self.trace is not None:
            self.trace.add(f"wait:{self.name}", self._takes)
        self._takes += 1
        return buf

    @property
    def pending(self) -> int:
        return len(self._posted)


class RingSender:
    """Non-blocking sends to one peer; keeps each tensor alive until its send completed."""

    def __init__(
        self,
        group: dist.ProcessGroup,
        dst: int,
        tag: int,
        max_inflight: int = 8,
        trace: FrameTrace | None = None,
        name: str = "",
    ) -> None:
        self.group, self.dst, self.tag = group, dst, tag
        self.max_inflight = max_inflight
        self.trace, self.name = trace, name
        self.global_dst = dist.get_global_rank(group, dst) if group is not dist.group.WORLD else dst
        self._inflight: deque[tuple[object, torch.Tensor, int]] = deque()
        self._sends = 0  # sequence number of the next send
        self.bytes_sent = 0

    def send(self, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().contiguous()
        work = dist.isend(tensor, group=self.group, group_dst=self.dst, tag=self.tag)
        self._inflight.append((work, tensor, self._sends))
        if self.trace is not None:
            self.trace.add(f"send:{self.name}", self._sends)
        self._sends += 1
        self.bytes_sent += tensor.numel() * tensor.element_size()
        self.reap()

    def _wait_oldest(self) -> None:
        work, _, seq = self._inflight.popleft()
        work.wait()
        if self.trace is not None:
            self.trace.add(f"send_wait:{self.name}", seq)

    def reap(self) -> None:
        """Drop the sends known complete (oldest first); wait on the oldest beyond ``max_inflight``."""
        while self._inflight and (
            len(self._inflight) > self.max_inflight or self._inflight[0][0].is_completed()
        ):
            self._wait_oldest()

    def flush(self) -> None:
        """Wait for every send still in flight."""
        while self._inflight:
            self._wait_oldest()

    @property
    def inflight(self) -> int:
        return len(self._inflight)
