"""Sequence parallelism: diffusers' own context parallelism (Ulysses, Ring) on a model, over a process group.

- ``config``: ``SequenceConfig`` (the Ulysses and Ring degrees);
- ``mesh``: the device mesh over the job's group (and CFG parallelism's two halves of it);
- ``parallelize``: ``parallelize_sequence`` (enable on a model, with diffusers' ``_cp_plan``) and its
  ``SequenceHandle`` (traffic, ``remove()``);
- ``cpu``: what diffusers 0.42's context parallelism needs on a CPU-only torch, in one place;
- ``traffic``: the bytes its collectives send, counted as they run.

Nothing here imports diffusers at import time; ``parallelize_sequence`` does when it runs.
"""

from parallel.sequence.config import SequenceConfig
from parallel.sequence.parallelize import SequenceHandle, parallelize_sequence

__all__ = ["SequenceConfig", "SequenceHandle", "parallelize_sequence"]
