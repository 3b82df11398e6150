"""GroupNorm on a row band with the statistics of the whole image.

Each band computes, per (sample, group), its element count ``n``, ``sum(x)`` and ``sum(x^2)``; these
are all-reduced (summed, never averaged: bands may differ in size) and turned into the global mean
and variance. The sums are formed in float64 from a float32 per-band mean and variance, so that
``E[x^2] - E[x]^2`` does not cancel catastrophically.

Displaced mode: the all-reduce of this step's sums is left in flight and used next step, corrected
with the fresh local sums: ``global_stale - local_stale + local_fresh`` (only the other bands'
contribution is stale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import replace_forward


def local_group_sums(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """float64 ``[sum(x) (B*G), sum(x^2) (B*G), n]`` of one band, flattened into one vector.

    The per-group mean and variance come from torch's fused group-norm kernel (one pass, several
    times faster than ``var_mean`` here); its output is discarded.
    """
    b, c = x.shape[:2]
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    xf = xf.contiguous()  # the fused kernel needs it; a conv may hand over channels-last strides
    n = xf[0, 0].numel() * (c // groups)
    _, mean, rstd = torch.native_group_norm(xf, None, None, b, c, n * groups // c, groups, eps)
    mean = mean.double().reshape(-1)
    var = (1.0 / rstd.double().reshape(-1) ** 2 - eps).clamp_min(0.0)
    s1 = mean * n
    s2 = (var + mean * mean) * n
    return torch.cat([s1, s2, s1.new_tensor([float(n)])])


def normalize_with_sums(x: torch.Tensor, sums: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """Apply ``norm`` to ``x`` using global sums from ``local_group_sums`` added over all bands.

    Mean, inverse deviation and the affine weights fold into one scale and shift per channel, so the
    tensor is read once (``addcmul``) instead of once per operation.
    """
    b, c = x.shape[:2]
    g = norm.num_groups
    s1, s2, n = sums[: b * g], sums[b * g : 2 * b * g], sums[-1]
    mean = s1 / n
    inv = torch.rsqrt((s2 / n - mean * mean).clamp_min(0.0) + norm.eps)
    scale = inv.view(b, g, 1).expand(b, g, c // g).reshape(b, c)
    shift = -mean.view(b, g, 1).expand(b, g, c // g).reshape(b, c) * scale
    if norm.affine:
        weight = norm.weight.double()
        scale, shift = scale * weight, shift * weight + norm.bias.double()
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    shape = (b, c) + (1,) * (x.dim() - 2)
    y = torch.addcmul(shift.to(dtype).view(shape), x.to(dtype), scale.to(dtype).view(shape))
    return y.to(x.dtype)


def patch_group_norm(norm: nn.GroupNorm, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``norm`` use global statistics; returns the function that undoes it."""
    layer = rt.new_layer_id()
    key = ("norm", layer)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if rt.world == 1:
            return nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        local = local_group_sums(x, norm.num_groups, norm.eps)
        sync = rt.sync_now
        total = rt.exchange(key, lambda: rt.comm.all_reduce_sum(local, "norm"))
        if not sync:
            total = total - rt.recall(key) + local
        if rt.config.mode == "displaced":
            rt.remember(key, local)
        return normalize_with_sums(x, total, norm)

    return replace_forward(norm, forward)
