"""A banded Conv2d equals the full conv on its rows, for the geometries a UNet has and bands of any height,
including bands so thin that only the padded-buffer path fits (real gloo processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from _parallel_dist import run_ranks
from torch import nn

from parallel.comm import Comm
from parallel.patch.config import PatchConfig
from parallel.patch.conv import patch_conv2d
from parallel.patch.runtime import PatchRuntime

# (kernel, stride, padding, dilation): a UNet's 3x3, its downsampler, a 1x1 shortcut, a 5x5, a dilated 3x3
GEOMETRIES = [(3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 0, 1), (5, 1, 2, 1), (3, 1, 2, 2)]


def _conv(kernel: int, stride: int, padding: int, dilation: int) -> nn.Conv2d:
    torch.manual_seed(kernel * 7 + stride + padding + dilation)
    return nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation).eval()


def _image() -> torch.Tensor:
    return torch.randn(2, 3, 12, 5, generator=torch.Generator().manual_seed(0))


def banded_convs(rank: int, world: int, heights: list[int]) -> list[torch.Tensor]:
    """Every geometry's output on this rank's band (rows split by ``heights``)."""
    start = sum(heights[:rank])
    band = _image()[:, :, start : start + heights[rank]].contiguous()
    outputs = []
    for geometry in GEOMETRIES:
        conv = _conv(*geometry)
        rt = PatchRuntime(Comm(dist.group.WORLD), PatchConfig(), align=geometry[1])
        patch_conv2d(conv, rt)
        with torch.no_grad():
            outputs.append(conv(band))
    return outputs


@pytest.mark.parametrize("heights", [[6, 6], [4, 4, 4], [2, 8, 2], [10, 2], [4, 2, 2, 4]])
def test_banded_conv_rows_equal_the_full_conv(heights):
    ranks = run_ranks(banded_convs, len(heights), heights, timeout=120)
    for index, geometry in enumerate(GEOMETRIES):
        with torch.no_grad():
            full = _conv(*geometry)(_image())
        got = torch.cat([r[index] for r in ranks], dim=2)
        torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5, msg=f"geometry {geometry}, bands {heights}")
