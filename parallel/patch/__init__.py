"""Patch (row-band) parallelism, DistriFusion-style, as plain torch over a process group.

- ``bands``: band geometry (``band_bounds``, ``slice_band``, ``gather_bands``);
- ``config``: ``PatchConfig`` (mode "sync" | "displaced", warmup, stale dtype, K/V source);
- ``parallelize``: ``PatchPlan`` (what a model family supplies) and ``parallelize_patch``, built from
  ``conv`` (halo exchange), ``norm`` (global GroupNorm), ``attention`` (K/V gather) and ``embed``
  (a DiT's patch embedding on a band);
- ``linear_attention``: linear attention on bands, its per-head states summed over the bands (no K/V
  exchanged), for the families whose attention processors use it;
- ``runtime``: the per-model exchange state (``PatchRuntime``) and ``PatchHandle``;
- ``traffic``: the bytes a band exchanges per step, from layer shapes;
- ``cfg``: CFG parallelism (the two guidance branches on two halves of the group), which composes with bands.

The sub-modules import diffusers' attention classes; this package imports none of them itself, so
``parallel.patch.bands`` and ``parallel.patch.config`` stay cheap to import.
"""
