"""What every model's layer list for pipeline training shares: the tuple carried between layers.

DeepSpeed's PipelineModule runs a list of layers, each taking and returning one tuple of tensors, and cuts
it into stages; a model family supplies its list (``pipelines.families.*.training``). These helpers are
the part that does not depend on the model.
"""

from __future__ import annotations

import torch
from torch import nn

Carry = tuple[torch.Tensor, ...]
"""What travels from one layer (and one pipeline stage) to the next."""


def packed(*tensors: torch.Tensor) -> Carry:
    """The carry as contiguous tensors: gloo and NCCL send contiguous buffers only."""
    return tuple(t.contiguous() for t in tensors)


def run_layers(layers: list[nn.Module], inputs: Carry) -> torch.Tensor:
    """The layers applied in order on one device: equals the model's forward (reference for tests)."""
    carry = inputs
    for layer in layers:
        carry = layer(carry)
    return carry


def noise_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The diffusion training loss (noise or velocity prediction), in float32."""
    return nn.functional.mse_loss(prediction.float(), target.float())
