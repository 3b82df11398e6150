"""Band geometry: tiling, alignment, uneven splits and the too-short error."""

import pytest
import torch

from parallel.patch.bands import band_bounds, check_bounds, slice_band


@pytest.mark.parametrize(
    "height,world,align", [(16, 1, 2), (16, 3, 2), (18, 3, 4), (20, 3, 2), (64, 5, 8), (67, 4, 8)]
)
def test_bands_tile_and_align(height, world, align):
    bounds = band_bounds(height, world, align)
    assert len(bounds) == world
    assert bounds[0][0] == 0 and bounds[-1][1] == height
    for (_, b), (c, _) in zip(bounds, bounds[1:]):
        assert b == c
    assert all(a % align == 0 for a, _ in bounds)
    assert all((b - a) % align == 0 for a, b in bounds[:-1])
    assert all(b - a >= align for a, b in bounds)
    check_bounds(bounds, align)  # consistent with the validator
    # as even as alignment allows: aligned parts differ by at most one unit
    units = [(b - a) // align for a, b in bounds]
    assert max(units) - min(units) <= 1


def test_uneven_split_puts_leftover_rows_last():
    assert band_bounds(16, 3, 2) == [(0, 6), (6, 12), (12, 16)]
    assert band_bounds(18, 3, 4) == [(0, 8), (8, 12), (12, 18)]


def test_too_short_names_height_degree_and_minimum():
    with pytest.raises(ValueError, match=r"height=10.*degree=3.*at least 4 rows"):
        band_bounds(10, 3, 4)
    with pytest.raises(ValueError, match="degree"):
        band_bounds(16, 0, 2)
    with pytest.raises(ValueError, match="minimum band height is 2"):
        check_bounds([(0, 1), (1, 3)], 2)
    with pytest.raises(ValueError, match="multiple of align=4"):
        check_bounds([(0, 6), (6, 12)], 4)


def test_slice_band_round_trip():
    x = torch.arange(2 * 3 * 17 * 5, dtype=torch.float32).reshape(2, 3, 17, 5)
    bounds = band_bounds(17, 3, 2)
    assert torch.equal(torch.cat([slice_band(x, bounds, r) for r in range(3)], dim=-2), x)
