"""Generic parallel mechanics as plain torch over a process group: no Ray, no runtime, no model family.

Sub-packages:

- ``comm``: exchanges over a process group with bytes counted per kind and peer (``Comm``, ``Pending``);
- ``patch``: patch (row-band) parallelism, DistriFusion-style: band geometry (``bands``), halo convs,
  global GroupNorm, K/V gathering self-attention, the ``PatchPlan`` a model family supplies and
  ``parallelize_patch`` that applies it; CFG parallelism (``patch.cfg``), which composes with bands;
- ``sequence``: sequence parallelism, diffusers' own context parallelism (Ulysses, Ring) on a model whose
  class ships a ``_cp_plan``, over a given group (and CFG parallelism's two halves of it);
- ``frames``: layer-and-frame pipelining of a video DiT (DualParal) over the ``FrameAdapter`` a family supplies;
- ``training``: pipeline training (DeepSpeed ``PipelineModule`` cut by measured cost, bubble filling);
- ``cost``: the cost model (profile, traffic, prediction, degree=auto).

A model family (``pipelines.families``) holds what is specific to a model: its plans say which of its
layers these mechanics apply to. Everything runs on ``torch.distributed`` (gloo or nccl).
"""

import importlib

# Where each public name lives. Imported on first use (PEP 562): `import parallel.patch.bands` from the job
# spec must not import every strategy, and with them diffusers' models.
_EXPORTS = {
    "BytesSent": "parallel.comm",
    "CFGLayout": "parallel.patch.cfg",
    "Comm": "parallel.comm",
    "PatchConfig": "parallel.patch.config",
    "PatchHandle": "parallel.patch.runtime",
    "PatchPlan": "parallel.patch.parallelize",
    "SequenceConfig": "parallel.sequence.config",
    "SequenceHandle": "parallel.sequence.parallelize",
    "band_bounds": "parallel.patch.bands",
    "combine_cfg": "parallel.patch.cfg",
    "gather_bands": "parallel.patch.bands",
    "make_cfg_groups": "parallel.patch.cfg",
    "parallelize_patch": "parallel.patch.parallelize",
    "parallelize_sequence": "parallel.sequence.parallelize",
    "slice_band": "parallel.patch.bands",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parallel' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
