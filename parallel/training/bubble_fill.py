"""Bubble filling for pipeline training (DiffusionPipe): the frozen work runs in the pipeline's idle slots.

The work outside the trained backbone (data generation and augmentation, the frozen VAE encoder, noise and
timestep sampling) is a pure function of the micro-batch index, so it need not run when DeepSpeed asks for
the micro-batch (the LoadMicroBatch instruction, in series before the first stage's forward). A
`BubbleFiller` runs the micro-batch iterator ahead in a background thread, up to `depth` micro-batches
ahead (a whole next batch with depth = micro-batches per step), and hands DeepSpeed finished ones.

The thread runs at a lower OS scheduling priority (a larger nice value, set per thread on Linux), so it
takes the CPU when the stage's own thread blocks - waiting for an activation or a gradient from its
neighbour, the 1F1B warm-up and cool-down bubbles - or a core another stage leaves idle, and yields it
when the stage computes. On CUDA the same thread overlaps the frozen work with the pipeline's
communication waits. Results do not depend on it: one producer computes the micro-batches in order, so
the stream is the same with and without filling, and losses are identical.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator

import torch

_DONE = object()


class BubbleFiller:
    """An iterator yielding `source`'s items in order, computed ahead in a background thread."""

    def __init__(self, source: Iterator, depth: int, nice: int = 10, name: str = "bubble-filler") -> None:
        if depth < 1:
            raise ValueError(f"depth: must be at least 1, got {depth}")
        self.source = source
        self.nice = nice
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _lower_priority(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:  # Linux: a thread id as the "process" changes that thread only.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.nice(0) + self.nice)
            except OSError:
                pass

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        self._lower_priority()
        torch.set_num_threads(self._threads)  # the intra-op thread count is per thread: keep the stage's
        while not self._stop.is_set():
            try:
                item = next(self.source)
            except StopIteration:
                self._put(_DONE)
                return
            except BaseException as err:  # handed to the consumer, raised there
                self._put(err)
                return
            if not self._put((item,)):
                return

    def __iter__(self) -> BubbleFiller:
        return self

    def __next__(self):
        item = self._ready.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item[0]

    def close(self) -> None:
        """Stop the thread (it may be computing one item beyond the last one consumed)."""
        self._stop.set()
        self._thread.join()
