"""A finished block's VAE decode moved off stage 0: split by frames over the stages (a VAE whose frames decode
apart), or whole on one other stage (a causal VAE).

Stage 0 owns the latents, so it hands every other stage its share of a finished block's latent frames
(``stage_plan`` sizes the shares: contiguous, in stage order) and decodes its own; each stage sends its
decoded frames back, and stage 0 appends the block's frames to the video in order. Decoding on one stage
made it the slowest in every tick that decodes a block (one per tick once the queue is full), and it
stalled the others in the short ticks of the queue's fill and drain.

A causal VAE (Wan's with its cache, CogVideoX, LTX, HunyuanVideo) cannot split a block: its frames depend
on the frames before. ``stage_plan`` then gives one stage all of them (shares like [0, 8]); that stage
decodes every block whole, in block order, with its own stateful block decoder, so the causal cache lives
on that one stage and the frames are the ones stage 0 would have decoded. How many frames a block decodes
to is not fixed there (Wan's first block gives ``1 + 4 (n - 1)``, the later ones ``4 n``): ``decoded_frames``
(the family's count, by block) gives stage 0 each receive's shape when it posts it, so no header message is
needed and the decoding stage checks its frames against it before sending. A decoder that decodes in windows
(LTX-Video's) may hold a block back and return its frames with later blocks' (a count of 0, then more than a
block's): nothing is sent for a block of no frames, and stage 0 writes it as no frames.

When each share is exchanged is fixed by the schedule, not by timing, so no stage can wait on one that
waits on it: stage 0 finishes the blocks that took their last step in tick t - 1 at the start of tick t
(``FramePipeline`` settles their outputs there) and sends their shares before any item of tick t; every
other stage takes and decodes its shares of them at its own start of tick t, before its first item of
tick t, so its frames are on their way before its outputs of tick t are; and stage 0 writes a block once
the next block is finished (after it received an output of tick t, so the frames were sent before), or
at ``flush``. Gloo matches same-tag messages from one peer in order. A whole-block decode is the case of
one share: the same exchanges at the same points.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from parallel.frames.ring import RingChannel, RingSender

TAG_SHARE, TAG_FRAMES = 2, 3

Decode = Callable[[torch.Tensor], np.ndarray]
"""[1, C, f, h, w] latent frames -> [F, H, W, 3] uint8 frames (a per-frame VAE: F = f; a causal VAE's block
decoder: called on whole blocks in order)."""


class SplitDecoder:
    """One stage's part in decoding finished blocks on other stages (by frames, or whole on one stage); the
    pipeline calls ``block_done`` (stage 0), ``catch_up`` (the others) and ``flush``."""

    def __init__(
        self,
        group: dist.ProcessGroup,
        shares: list[int],
        share_shape: tuple[int, int, int],
        pixels: tuple[int, int],
        dtype: torch.dtype,
        device: torch.device,
        decode: Decode | None,
        write: Callable[[np.ndarray], None] | None = None,
        decoded_frames: Callable[[int], int] | None = None,
    ) -> None:
        """``shares``: latent frames of a block each stage decodes; ``share_shape``: (channels, height, width)
        of one latent frame; ``pixels``: (height, width) of a decoded frame; ``decode``: this stage's decoder
        of its shares (None on a stage with none); ``write``: stage 0's sink of a block's decoded frames, in
        block order; ``decoded_frames``: frames block b decodes to, when one stage decodes whole blocks of a
        causal VAE (None: a share of f latent frames decodes to f frames)."""
        self.group = group
        self.rank = dist.get_rank(group)
        self.shares = list(shares)
        if decoded_frames is not None and sum(1 for share in shares if share) != 1:
            raise ValueError(f"decode_shares: {shares}: a whole-block decode belongs to one stage")
        self.decoded_frames = decoded_frames
        self.pixels = tuple(pixels)
        self.starts = [sum(shares[:s]) for s in range(len(shares))]
        self.decode, self.write = decode, write
        self.next_block: int | None = None
        """The next block this stage decodes its share of (other stages); set from the pipeline."""
        self.decode_s = 0.0
        """Seconds spent decoding."""
        channels, height, width = share_shape
        self.share_dtype = torch.promote_types(dtype, torch.float32)
        """The dtype shares travel in: a finished latent may not be in the block's initial ``dtype`` (a
        flow-matching step returns the model output's: bfloat16 from float32 latents), and at float32 or
        wider every such latent arrives exactly."""
        peers = [s for s in range(1, len(shares)) if shares[s]]
        if self.rank == 0:
            self.to_peer = {s: RingSender(group, s, TAG_SHARE, max_inflight=4) for s in peers}
            self.from_peer = {
                s: RingChannel(group, s, TAG_FRAMES, (shares[s], *pixels, 3), torch.uint8, torch.device("cpu"))
                for s in peers
            }
            self.pending: deque[tuple[np.ndarray | None, list[int]]] = deque()
            """(stage 0's decoded frames, the stages whose frames are coming) of blocks not written yet, oldest
            first."""
        elif shares[self.rank]:
            self.share_in = RingChannel(
                group, 0, TAG_SHARE, (1, channels, shares[self.rank], height, width), self.share_dtype, device
            )
            self.frames_out = RingSender(group, 0, TAG_FRAMES, max_inflight=4)

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        started = time.perf_counter()
        frames = self.decode(latent)
        self.decode_s += time.perf_counter() - started
        return frames

    def _share(self, latent: torch.Tensor, stage: int) -> torch.Tensor:
        start = self.starts[stage]
        return latent[:, :, start : start + self.shares[stage]]

    # ---- stage 0 ----------------------------------------------------------------------------
    def block_done(self, block: int, latent: torch.Tensor) -> None:
        """A finished block (stage 0, in block order): send the shares, decode its own, write the blocks
        before it."""
        coming = []
        for stage, sender in self.to_peer.items():
            shape = self._frames_shape(stage, block)
            if shape[0]:  # a decoder holding the block back sends nothing for it
                self.from_peer[stage].post(shape)  # before the frames can arrive
                coming.append(stage)
            sender.send(self._share(latent, stage).to(self.share_dtype))
        own = self._decode(self._share(latent, 0)) if self.shares[0] else None
        while self.pending:  # their frames were sent before the output that finished this block
            self._write_oldest()
        self.pending.append((own, coming))

    def _frames_shape(self, stage: int, block: int) -> tuple[int, ...]:
        """The shape of ``stage``'s decoded frames of ``block``."""
        count = self.shares[stage] if self.decoded_frames is None else self.decoded_frames(block)
        return (count, *self.pixels, 3)

    def _write_oldest(self) -> None:
        own, coming = self.pending.popleft()
        parts = [] if own is None else [own]
        parts += [self.from_peer[stage].take().numpy() for stage in sorted(coming)]
        if not parts:  # the decoding stage held the block back: later blocks' frames bring its frames
            parts = [np.zeros((0, *self.pixels, 3), np.uint8)]
        self.write(np.concatenate(parts) if len(parts) > 1 else parts[0])  # one write per block, maybe empty

    # ---- the other stages -------------------------------------------------------------------
    def catch_up(self, finished: int) -> None:
        """Decode this stage's share of every block before ``finished`` not yet decoded (stage 0 has sent
        them) and send the frames to stage 0."""
        if self.rank == 0 or not self.shares[self.rank]:
            self.next_block = finished
            return
        while self.next_block < finished:
            latent = self.share_in.take()
            if self.next_block + 1 < finished:
                self.share_in.post()
            frames = self._decode(latent)
            expected = self._frames_shape(self.rank, self.next_block)
            if frames.shape != expected:  # stage 0 posted a receive of the expected shape
                raise ValueError(
                    f"block {self.next_block} decoded to frames of shape {frames.shape}, stage 0 expects "
                    f"{expected} (the family's video_frames and its block decoder disagree, or the decoder lost its state)"
                )
            if len(frames):  # stage 0 posted no receive for a block held back
                self.frames_out.send(torch.from_numpy(np.ascontiguousarray(frames)))
            self.next_block += 1

    def flush(self, finished: int) -> None:
        """Every block before ``finished`` decoded and (stage 0) written; sends completed."""
        if self.rank == 0:
            while self.pending:
                self._write_oldest()
            for sender in self.to_peer.values():
                sender.flush()
        else:
            self.catch_up(finished)
            if self.shares[self.rank]:
                self.frames_out.flush()

    @property
    def bytes_sent(self) -> dict[int, int]:
        """Bytes sent, by global rank of the peer."""
        senders = list(self.to_peer.values()) if self.rank == 0 else [getattr(self, "frames_out", None)]
        return {s.global_dst: s.bytes_sent for s in senders if s is not None}
