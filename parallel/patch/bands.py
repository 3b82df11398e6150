"""Row-band geometry: how a latent is split into one band of rows per worker.

A band is a half-open row range ``(start, end)`` of the latent (dim -2). Bands tile the rows in
order: band ``r`` belongs to rank ``r`` of the patch group. Every band start is a multiple of
``align`` so that a band stays aligned through every stride-2 layer (UNets: ``align = 2**downsamples``;
DiTs: ``align = patch_size``); every band except possibly the last is a multiple of ``align`` high,
and the last one also takes the ``height % align`` leftover rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

Bounds = list[tuple[int, int]]


def band_bounds(height: int, world: int, align: int = 1, min_rows: int | None = None) -> Bounds:
    """Split ``height`` rows into ``world`` aligned row bands, as even as alignment allows.

    The ``height // align`` aligned units are dealt out so that band sizes differ by at most one unit
    (the first bands get the extra units); the ``height % align`` leftover rows go to the last band.
    ``min_rows`` (default ``align``) is the shortest band allowed: one row at the deepest level of the
    model, which is also what a 3x3 conv halo needs from a neighbour.
    """
    if world < 1:
        raise ValueError(f"degree must be >= 1, got degree={world}")
    if align < 1:
        raise ValueError(f"align must be >= 1, got align={align}")
    if height < 1:
        raise ValueError(f"height must be >= 1, got height={height}")
    min_rows = align if min_rows is None else max(min_rows, 1)
    # the minimum band height, rounded up to whole aligned units
    min_units = -(-min_rows // align)
    units, leftover = divmod(height, align)
    if units // world < min_units:
        raise ValueError(
            f"height={height} cannot be split into degree={world} bands: each band needs at least "
            f"{min_units * align} rows (align={align}), so height must be >= {world * min_units * align}"
        )
    base, extra = divmod(units, world)
    bounds: Bounds = []
    start = 0
    for r in range(world):
        rows = (base + (1 if r < extra else 0)) * align
        if r == world - 1:
            rows += leftover
        bounds.append((start, start + rows))
        start += rows
    return bounds


def bounds_from_heights(heights: list[int]) -> Bounds:
    """Bands for the given per-rank band heights, in rank order."""
    bounds: Bounds = []
    start = 0
    for h in heights:
        bounds.append((start, start + h))
        start += h
    return bounds


def check_bounds(bounds: Bounds, align: int, min_rows: int | None = None) -> None:
    """Raise ValueError unless ``bounds`` tile rows from 0 with aligned, long-enough bands."""
    min_rows = align if min_rows is None else min_rows
    height = bounds[-1][1]
    start = 0
    for r, (a, b) in enumerate(bounds):
        if a != start:
            raise ValueError(
                f"bands must tile the rows in rank order; band {r} starts at {a}, expected {start}"
            )
        if b - a < min_rows:
            raise ValueError(
                f"height={height} split into degree={len(bounds)} bands gives band {r} only {b - a} rows; "
                f"the minimum band height is {min_rows} rows (align={align})"
            )
        if r < len(bounds) - 1 and (b - a) % align:
            raise ValueError(
                f"band {r} of height={height} (degree={len(bounds)}) has {b - a} rows, "
                f"not a multiple of align={align}; only the last band may be uneven"
            )
        start = b


def slice_band(full: torch.Tensor, bounds: Bounds, rank: int, dim: int = -2) -> torch.Tensor:
    """The rows of ``full`` (along ``dim``) that belong to ``rank``."""
    a, b = bounds[rank]
    return full.narrow(dim, a, b - a)


def gather_bands(
    band: torch.Tensor, group: dist.ProcessGroup | None, bounds: Bounds, dim: int = -2
) -> torch.Tensor:
    """All-gather every rank's band (uneven heights allowed) into the full tensor, on every rank.

    Bands are zero-padded to the tallest one for the collective and trimmed afterwards, because
    gloo (and the plain ``all_gather``) needs equal shapes.
    """
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    if world != len(bounds):
        raise ValueError(f"bounds has {len(bounds)} bands but the group has {world} ranks")
    if world == 1:
        return band
    dim = dim % band.dim()
    rank = dist.get_rank(group)
    a, b = bounds[rank]
    if band.shape[dim] != b - a:
        raise ValueError(f"rank {rank} band has {band.shape[dim]} rows along dim {dim}, bounds say {b - a}")
    tallest = max(e - s for s, e in bounds)
    padded = _pad_to(band.contiguous(), dim, tallest)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p.narrow(dim, 0, e - s) for p, (s, e) in zip(parts, bounds)], dim=dim)


def _pad_to(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if t.shape[dim] == size:
        return t
    shape = list(t.shape)
    shape[dim] = size - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def too_short_for_bands(height_px: int, rows: int, degree: int, align: int) -> str | None:
    """Why a ``height_px``-pixel render of ``rows`` latent rows cannot be cut into ``degree`` bands of whole
    ``align``-row units (``band_bounds``' rule), in pixels and rows both; None when it can."""
    try:
        band_bounds(rows, degree, align)
    except ValueError:
        least = degree * align * max(1, height_px // max(rows, 1))
        return (
            f"height {height_px}px ({rows} latent rows) is too short for {degree} bands of at least {align} latent "
            f"row{'' if align == 1 else 's'} each: it takes at least {least}px"
        )
    return None
