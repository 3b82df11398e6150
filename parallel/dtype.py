"""The dtype a model computes in, which is not always its first parameter's.

diffusers keeps some modules of a half-precision model in float32 (``_keep_in_fp32_modules``: Wan's
``scale_shift_table``, time embedder and norms), and Wan registers ``scale_shift_table`` first, so
``next(model.parameters()).dtype`` says float32 for a bfloat16 Wan transformer. Anything sized or cast by that
dtype then disagrees with the activations (a stage receiving float32 hidden states for bfloat16 layers).
diffusers' own ``ModelMixin.dtype`` skips those modules (and honours layerwise casting), so that is asked first.
"""

from __future__ import annotations

import torch
from torch import nn


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The model's own ``dtype`` where it has one (diffusers' models, wrappers of them), else the dtype of its
    first floating-point parameter."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    raise ValueError(f"{type(model).__name__} has no floating-point parameters to tell its dtype")
