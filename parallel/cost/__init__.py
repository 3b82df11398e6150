"""A cost model for Tessera's parallel strategies: profile, traffic, prediction, degree=auto.

- ``models``: published denoiser configs (SDXL, PixArt-alpha, Wan 2.1, FLUX.1-dev, SD3.5 large and medium,
  Qwen-Image) as data, built on the meta device, with each architecture's input recipe (``ModelSpec.kind``);
- ``profile``: ``profile_model(name, height, width, frames)`` -> FLOPs, parameter and activation bytes,
  per layer, without weights and without running at full size;
- ``specs``: device and link specs from ``specs.yaml`` (``load_specs(extra_yaml)`` to add your own);
- ``traffic``: bytes each worker sends per step under patch sync / displaced (ours, or all-gather like
  distrifuser's; on joint-attention transformers the image's K/V, the text kept whole), CFG, sequence
  parallelism (diffusers' Ulysses and Ring), the frame pipeline and pipeline training, and which of them
  overlap compute;
- ``predict``: ``predict_model(model, height, width, strategy, degree, device, link, mode, ring=1)`` -> step
  time, speedup and per-worker memory (each strategy's compute share: bands compute the text whole,
  sequence parallelism splits it; a device's efficiency falls as its share of the work shrinks,
  ``half_efficiency_flops``); ``predict_training`` -> training samples/s (one worker, data, pipeline);
- ``references.yaml``: measured and published figures, which ``pipelines.cost_validation`` holds predictions against
  (it needs the model families' layer lists, so it lives above them);
  ``python -m bench.cost_validation`` and ``python -m bench.scale`` write them to BENCHMARKS.md;
- ``show``: ``python -m parallel.cost.show sdxl 1024 1024`` prints a profile's totals and top layers;
- ``choose``: degree=auto for the scheduler::

      choose_degree(model, height, width, free_workers, device="cpu-core", link="loopback",
                    frames=1, mode="displaced", steps=50, min_gain=0.05, specs_yaml=None) -> int
      choose_plan(model, height, width, free_workers, strategies=("patch", "sequence"), ...) -> Plan

  the degree in 1..free_workers predicted fastest that fits the device's memory (patch-parallel bands for
  image models; frame-pipeline stages for video models, where ``frames`` matters); a larger degree must
  be ``min_gain`` faster than a smaller one to be taken. ``choose_plan`` also picks the strategy among those
  the caller's model family can run (and the Ring degree of sequence parallelism). ``model`` is a registered
  name (``registry()``: "builtin-image", "sdxl", "pixart-alpha", "wan2.1-1.3b", "wan2.1-14b", "flux.1-dev",
  "sd3.5-large", "sd3.5-medium", "qwen-image"), a ``ModelSpec`` (a family's ``cost_model``) or a
  ``ModelProfile``; the first call for a (model, size) profiles it on the meta device (seconds), later
  calls are memoised.

No Ray, no cluster, no runtime: plain torch and diffusers.
"""

from parallel.cost.choose import Plan, choose_degree, choose_plan
from parallel.cost.models import ModelSpec, get_model_spec, registry
from parallel.cost.predict import Prediction, predict, predict_model, predict_training
from parallel.cost.profile import LayerCost, ModelProfile, profile_model, profile_module
from parallel.cost.specs import DeviceSpec, LinkSpec, Specs, load_specs
from parallel.cost.traffic import Traffic, sequence_traffic, strategy_traffic

__all__ = [
    "DeviceSpec",
    "LayerCost",
    "LinkSpec",
    "ModelProfile",
    "ModelSpec",
    "Plan",
    "Prediction",
    "Specs",
    "Traffic",
    "choose_degree",
    "choose_plan",
    "get_model_spec",
    "load_specs",
    "predict",
    "predict_model",
    "predict_training",
    "profile_model",
    "profile_module",
    "registry",
    "sequence_traffic",
    "strategy_traffic",
]
