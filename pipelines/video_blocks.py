"""Finished frame blocks kept as one file each, so that they survive a paused or moved video job.

A service video job can stop at any tick boundary and continue on other workers, but an MP4 encoder's
state cannot be checkpointed. So stage 0 writes every decoded block to ``blocks/<index>.npy`` in the
job's partial folder (atomically: a crash leaves a block either whole or absent), and only when the
last block is in does ``close`` stream the blocks, one at a time, into the MP4. A resumed job writes
the blocks after its checkpoint again (the same frames: the render is deterministic), so the blocks
on disk always cover at least what the checkpoint says is finished. Memory holds one block at most.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.video_writer import StreamingMP4Writer


def block_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"{index:07d}.npy"


class BlockFileWriter:
    """The MP4 writer's interface (append, close, abort, frames) over per-block files in ``directory``.

    ``first_block`` is the index of the next block to arrive (blocks before it are already on disk);
    ``blocks`` the job's total; ``close`` writes ``video_path`` once all of them are there."""

    def __init__(
        self, directory: str | Path, video_path: str | Path, fps: float, blocks: int, first_block: int = 0
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.video_path = Path(video_path)
        self.fps = fps
        self.blocks = blocks
        self.next_block = first_block
        self.frames = sum(self._frames_in(i) for i in range(first_block))
        """Frames in the blocks on disk that precede the next one."""

    def _frames_in(self, index: int) -> int:
        path = block_path(self.directory, index)
        if not path.is_file():
            raise FileNotFoundError(f"frame block {index} is missing from {self.directory}")
        return int(np.load(path, mmap_mode="r").shape[0])

    def append(self, frames: np.ndarray) -> None:
        """Store the next finished block's uint8 [F, H, W, 3] frames."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
        path = block_path(self.directory, self.next_block)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as handle:
            np.save(handle, frames)
        os.replace(partial, path)
        self.next_block += 1
        self.frames += len(frames)

    def close(self) -> Path:
        """Stream every block into the MP4 (published atomically); the block files are left to the caller."""
        if self.next_block != self.blocks:
            raise ValueError(
                f"blocks: {self.next_block} of {self.blocks} frame blocks written; the video is incomplete"
            )
        writer = StreamingMP4Writer(self.video_path, self.fps)
        try:
            for index in range(self.blocks):
                writer.append(np.load(block_path(self.directory, index)))
            return writer.close()
        except BaseException:
            writer.abort()
            raise

    def abort(self) -> None:
        """A paused or failed stage: the finished blocks stay for the job to continue from."""
