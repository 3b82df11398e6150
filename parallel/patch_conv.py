"""Conv2d on a row band: pad with the neighbours' boundary rows instead of zeros.

For a conv with (row) kernel extent ``k`` (dilation included), stride ``s`` and padding ``p``, the
band owning input rows ``[a, b)`` owns output rows ``[a/s, ceil(b/s))`` (``a`` is aligned). Output
row ``o`` reads input rows ``s*o - p ... s*o - p + k - 1``, so the band needs ``p`` rows from the band
above and, if it is not the last band (its end is then aligned), ``max(0, k - s - p)`` rows from the
band below. The first band gets ``p`` zero rows on top and the last band the zero rows the full conv
would read below the image, exactly like the single-device conv. Only the two neighbours are
contacted (point-to-point), never an all-gather.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from parallel.patch_runtime import PatchRuntime


def conv_row_geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    """(kernel extent, stride, padding) along rows; raises if banding cannot be exact for this conv."""
    if conv.padding_mode != "zeros":
        raise NotImplementedError(
            f"patch parallel conv needs padding_mode='zeros', got {conv.padding_mode!r}"
        )
    if isinstance(conv.padding, str):
        raise NotImplementedError(f"patch parallel conv needs integer padding, got {conv.padding!r}")
    k = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
    s = conv.stride[0]
    p = conv.padding[0]
    # Banding is exact only when the full conv keeps ceil(H / s) rows, i.e. each output row has an
    # owner band; check a few heights rather than reasoning about every (k, s, p).
    for h in range(s, 5 * s + 1):
        if (h + 2 * p - k) // s + 1 != -(-h // s):
            raise NotImplementedError(
                f"conv with row kernel {k}, stride {s}, padding {p} does not keep ceil(H/stride) rows"
            )
    return k, s, p


def patch_conv2d(conv: nn.Conv2d, rt: PatchRuntime) -> Callable[[], None]:
    """Make ``conv`` band-aware; returns the function that undoes it."""
    k, s, p = conv_row_geometry(conv)
    need_prev = p  # rows needed from the band above
    need_next = max(0, k - s - p)  # rows needed from the band below (non-last bands)
    layer = rt.new_layer_id()
    pad_w = conv.padding[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        if not rt.is_last and h % s:
            raise RuntimeError(f"band of {h} rows is not aligned to conv stride {s}; bands must be aligned")
        if rt.world > 1:
            if (not rt.is_last and h < need_prev) or (not rt.is_first and h < need_next):
                raise RuntimeError(
                    f"band of {h} rows is shorter than the conv halo ({need_prev}, {need_next})"
                )
        b, c, _, w = x.shape
        from_prev_shape = (b, c, need_prev, w) if (not rt.is_first and need_prev) else None
        from_next_shape = (b, c, need_next, w) if (not rt.is_last and need_next) else None
        to_prev = x[:, :, :need_next] if (not rt.is_first and need_next) else None
        to_next = x[:, :, h - need_prev :] if (not rt.is_last and need_prev) else None
        halo_prev = halo_next = None
        if any(v is not None for v in (from_prev_shape, from_next_shape, to_prev, to_next)):
            halo_prev, halo_next = rt.exchange(
                ("halo", layer),
                lambda: rt.comm.exchange_halo(to_prev, to_next, from_prev_shape, from_next_shape, layer, x),
            )

        parts = []
        if need_prev:
            parts.append(halo_prev if halo_prev is not None else x.new_zeros(b, c, need_prev, w))
        parts.append(x)
        if rt.is_last:
            # zero rows below the image, as many as the full conv reads for this band's last output row
            out_rows = -(-h // s)
            below = max(0, s * (out_rows - 1) - p + k - h)
            if below:
                parts.append(x.new_zeros(b, c, below, w))
        elif need_next:
            parts.append(halo_next)
        padded = torch.cat(parts, dim=2) if len(parts) > 1 else x
        return F.conv2d(padded, conv.weight, conv.bias, conv.stride, (0, pad_w), conv.dilation, conv.groups)

    conv.forward = forward

    def undo() -> None:
        del conv.forward

    return undo
