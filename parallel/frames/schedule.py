"""The frame-block queue: which block takes which denoising step at which tick.

Block ``b`` enters the queue at tick ``b * stride`` at the highest noise level (step 0) and advances one
step per tick, leaving after its last step at tick ``b * stride + steps - 1``. Within a tick the queue is
walked oldest (least noisy) block first. The whole schedule is a pure function of (blocks, steps, stride),
so every stage derives the same work list without talking, and a 1-worker run follows exactly the same list.

``stride`` 1 is DualParal's queue (up to ``steps`` blocks in flight, each one step ahead of the next). A
larger stride makes the block a block attends to ``stride`` steps cleaner when it starts, so there is
motion to continue, at the price of ``steps / stride`` blocks in flight instead of ``steps`` (fewer blocks
to spread over pipeline stages) and ``(blocks - 1) * stride + steps`` ticks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkItem:
    """One model evaluation: frame block ``block`` at its denoising step ``step`` during ``tick``."""

    tick: int
    """Queue tick (one step for every block in the queue)."""
    block: int
    """Frame block index (video order)."""
    step: int
    """Denoising step index, 0 = highest noise."""


def queue_schedule(blocks: int, steps: int, stride: int = 1) -> list[WorkItem]:
    """Every (tick, block, step) in execution order."""
    if blocks < 1:
        raise ValueError(f"blocks: need at least one frame block, got {blocks}")
    if steps < 1:
        raise ValueError(f"steps: need at least one step, got {steps}")
    if not 1 <= stride <= steps:
        raise ValueError(f"block_stride: must be in [1, steps={steps}], got {stride}")
    items = []
    for tick in range(ticks(blocks, steps, stride)):
        items.extend(WorkItem(tick, block, tick - block * stride) for block in queue_at(tick, blocks, steps, stride))
    return items


def ticks(blocks: int, steps: int, stride: int = 1) -> int:
    return (blocks - 1) * stride + steps


def queue_at(tick: int, blocks: int, steps: int, stride: int = 1) -> list[int]:
    """Blocks in the queue during ``tick``, oldest first."""
    return list(range(blocks_finished(tick, blocks, steps, stride), min(tick // stride, blocks - 1) + 1))


def blocks_finished(tick: int, blocks: int, steps: int, stride: int = 1) -> int:
    """Blocks that left the queue before ``tick``: block b leaves after tick b * stride + steps - 1."""
    return max(0, min(blocks, -(-(tick - steps + 1) // stride)))


def split_frames(frames: int, block_frames: int, field: str = "frames") -> tuple[int, int]:
    """(frames actually rendered, number of blocks): a count that is not a multiple of the block size
    is rounded up to the next multiple, with a warning that says to what."""
    if block_frames < 1:
        raise ValueError(f"block_frames: must be at least 1, got {block_frames}")
    if frames < 1:
        raise ValueError(f"{field}: must be at least 1, got {frames}")
    blocks = -(-frames // block_frames)
    rounded = blocks * block_frames
    if rounded != frames:
        warnings.warn(
            f"{field}: {frames} is not a multiple of block_frames={block_frames}; rendering {rounded} frames "
            f"({blocks} block{'' if blocks == 1 else 's'})",
            stacklevel=2,
        )
    return rounded, blocks


def tick_profile(blocks: int, steps: int, stride: int = 1) -> list[tuple[int, int]]:
    """(work items, blocks decoded) per tick, one more tick than the queue has: a block that takes its last
    step in tick t is decoded at the start of tick t + 1, so the last one after the last tick. What the stage
    balance (``parallel.frames.partition.stage_plan``) weighs a cut by."""
    total = ticks(blocks, steps, stride)
    return [
        (
            len(queue_at(tick, blocks, steps, stride)) if tick < total else 0,
            blocks_finished(tick, blocks, steps, stride) - blocks_finished(tick - 1, blocks, steps, stride)
            if tick > 0
            else 0,
        )
        for tick in range(total + 1)
    ]
