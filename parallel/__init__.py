"""Parallel strategies as plain torch functions applied to a model and a process group.

Patch (row-band) parallelism, DistriFusion-style, and CFG parallelism:

- ``bands``: band geometry (``band_bounds``, ``slice_band``, ``gather_bands``);
- ``comm``: point-to-point / collective exchanges with per-peer byte counters;
- ``patch_config``: ``PatchConfig`` (mode "sync" | "displaced", warmup_steps);
- ``patch_unet`` / ``patch_dit`` / ``patch_wan``: ``parallelize_unet_patch`` / ``parallelize_dit_patch`` (PixArt) /
  ``parallelize_wan_patch`` (diffusers' Wan transformer), built from
  ``patch_conv`` (halo exchange), ``patch_norm`` (global GroupNorm), ``patch_attention`` (K/V gather);
- ``cfg``: ``make_cfg_groups`` and ``combine_cfg``.

No Ray, no runtime: everything runs on ``torch.distributed`` (gloo or nccl).
"""

from parallel.bands import band_bounds, gather_bands, slice_band
from parallel.cfg import CFGLayout, combine_cfg, make_cfg_groups
from parallel.comm import BytesSent, Comm
from parallel.patch_config import PatchConfig
from parallel.patch_dit import parallelize_dit_patch
from parallel.patch_runtime import PatchHandle
from parallel.patch_unet import parallelize_unet_patch, unet_alignment
from parallel.patch_wan import parallelize_wan_patch

__all__ = [
    "BytesSent",
    "CFGLayout",
    "Comm",
    "PatchConfig",
    "PatchHandle",
    "band_bounds",
    "combine_cfg",
    "gather_bands",
    "make_cfg_groups",
    "parallelize_dit_patch",
    "parallelize_unet_patch",
    "parallelize_wan_patch",
    "slice_band",
    "unet_alignment",
]
