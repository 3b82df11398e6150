"""Conv2d on a row band: pad with the neighbours' boundary rows instead of zeros.

For a conv with (row) kernel extent ``k`` (dilation included), stride ``s`` and padding ``p``, the
band owning input rows ``[a, b)`` owns output rows ``[a/s, ceil(b/s))`` (``a`` is aligned). Output
row ``o`` reads input rows ``s*o - p ... s*o - p + k - 1``, so the band needs ``p`` rows from the band
above and, if it is not the last band (its end is then aligned), ``max(0, k - s - p)`` rows from the
band below. The first band gets ``p`` zero rows on top and the last band the zero rows the full conv
would read below the image, exactly like the single-device conv. Only the two neighbours are
contacted (point-to-point), never an all-gather.

The band is not copied into a padded buffer: the conv runs on the band with its ordinary zero padding
(which already gives the band's output rows), and only the few output rows that read a neighbour's rows
are computed again from a thin slab of halo plus edge rows, and written over. At the highest resolution that
copy was the largest tensor alive per worker.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from parallel.patch.runtime import PatchRuntime
from parallel.patch.swap import replace_forward


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
        wire = rt.wire_dtype(x.dtype)
        to_prev = x[:, :, :need_next].to(wire) if (not rt.is_first and need_next) else None
        to_next = x[:, :, h - need_prev :].to(wire) if (not rt.is_last and need_prev) else None
        halo_prev = halo_next = None
        if any(v is not None for v in (from_prev_shape, from_next_shape, to_prev, to_next)):
            halo_prev, halo_next = rt.exchange(
                ("halo", layer),
                lambda: rt.comm.exchange_halo(to_prev, to_next, from_prev_shape, from_next_shape, layer, x, wire),
                activations=True,
            )
            halo_prev = None if halo_prev is None else halo_prev.to(x.dtype)
            halo_next = None if halo_next is None else halo_next.to(x.dtype)

        top = -(-p // s) if halo_prev is not None else 0  # output rows [0, top) read the band above
        first_low = -(-(h + p - k + 1) // s)  # output rows [first_low, h / s) read the band below
        if (top and s * (top - 1) - p + k > h) or (
            halo_next is not None and (first_low < top or s * first_low - p < 0)
        ):
            return _padded_conv(conv, x, halo_prev, halo_next, rt.is_last, k, s, p)  # too thin for slabs
        out = F.conv2d(x, conv.weight, conv.bias, conv.stride, (p, pad_w), conv.dilation, conv.groups)
        if top:
            slab = torch.cat([halo_prev, x[:, :, : s * (top - 1) - p + k]], dim=2)
            out[:, :, :top] = _conv_rows(conv, slab)
        if halo_next is not None:
            slab = torch.cat([x[:, :, s * first_low - p :], halo_next], dim=2)
            out[:, :, first_low:] = _conv_rows(conv, slab)
        return out

    return replace_forward(conv, forward)


def _conv_rows(conv: nn.Conv2d, rows: torch.Tensor) -> torch.Tensor:
    """``conv`` over ``rows`` with no row padding (the rows already hold what the output rows read)."""
    return F.conv2d(rows, conv.weight, conv.bias, conv.stride, (0, conv.padding[1]), conv.dilation, conv.groups)


def _padded_conv(
    conv: nn.Conv2d,
    x: torch.Tensor,
    halo_prev: torch.Tensor | None,
    halo_next: torch.Tensor | None,
    is_last: bool,
    k: int,
    s: int,
    p: int,
) -> torch.Tensor:
    """The band padded in one buffer (halos, or zero rows at the image's edges), then ``conv``: for bands
    thinner than the conv's reach, where a slab would overlap the other or leave the band."""
    b, c, h, w = x.shape
    parts = [halo_prev if halo_prev is not None else x.new_zeros(b, c, p, w)] if p else []
    parts.append(x)
    if is_last:
        # zero rows below the image, as many as the full conv reads for this band's last output row
        below = max(0, s * (-(-h // s) - 1) - p + k - h)
        if below:
            parts.append(x.new_zeros(b, c, below, w))
    elif halo_next is not None:
        parts.append(halo_next)
    return _conv_rows(conv, torch.cat(parts, dim=2) if len(parts) > 1 else x)
