"""A DeepSpeed PipelineModule over a layer list, cut at given stage boundaries.

DeepSpeed's own partition methods count layers or parameters; a UNet's cost sits in its high-resolution
blocks, not in its parameters, so the boundaries come from measured time (parallel/pipeline_partition.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from deepspeed.pipe import PipelineModule
from torch import nn


class MeasuredPipelineModule(PipelineModule):
    """PipelineModule whose stages are the given contiguous layer ranges."""

    def __init__(self, layers: Sequence[nn.Module], boundaries: Sequence[int], **kwargs) -> None:
        if boundaries[0] != 0 or boundaries[-1] != len(layers) or sorted(boundaries) != list(boundaries):
            raise ValueError(f"boundaries {list(boundaries)} do not cut {len(layers)} layers in order")
        self._measured_boundaries = list(boundaries)
        super().__init__(layers=list(layers), num_stages=len(boundaries) - 1, **kwargs)

    def _partition_layers(self, method: str = "measured") -> None:
        self.parts = list(self._measured_boundaries)
        stage_id = self._topo.get_coord(self.global_rank).pipe
        self._set_bounds(start=self.parts[stage_id], stop=self.parts[stage_id + 1])


def build_pipeline_module(
    layers: Sequence[nn.Module],
    boundaries: Sequence[int],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    activation_checkpoint_interval: int = 0,
) -> MeasuredPipelineModule:
    """The layers as a pipeline of len(boundaries) - 1 stages; needs deepspeed.init_distributed first.

    `activation_checkpoint_interval` > 0 recomputes activations in the backward pass every that many layers.
    """
    return MeasuredPipelineModule(
        layers,
        boundaries,
        loss_fn=loss_fn,
        partition_method="measured",
        activation_checkpoint_interval=activation_checkpoint_interval,
    )
