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

import importlib

# Where each public name lives. Imported on first use (PEP 562): `import parallel.bands` from the job spec
# must not import every strategy, and with them diffusers' models.
_EXPORTS = {
    "BytesSent": "parallel.comm",
    "CFGLayout": "parallel.cfg",
    "Comm": "parallel.comm",
    "PatchConfig": "parallel.patch_config",
    "PatchHandle": "parallel.patch_runtime",
    "band_bounds": "parallel.bands",
    "combine_cfg": "parallel.cfg",
    "gather_bands": "parallel.bands",
    "make_cfg_groups": "parallel.cfg",
    "parallelize_dit_patch": "parallel.patch_dit",
    "parallelize_unet_patch": "parallel.patch_unet",
    "parallelize_wan_patch": "parallel.patch_wan",
    "slice_band": "parallel.bands",
    "unet_alignment": "parallel.patch_unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parallel' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
