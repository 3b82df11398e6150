"""A cost model for Tessera's parallel strategies: profile, traffic, prediction, degree=auto.

- ``models``: published denoiser configs (SDXL, PixArt-alpha, Wan 2.1) as data, built on the meta device;
- ``profile``: ``profile_model(name, height, width, frames)`` -> FLOPs, parameter and activation bytes,
  per layer, without weights and without running at full size;
- ``specs``: device and link specs from ``specs.yaml`` (``load_specs(extra_yaml)`` to add your own).

No Ray, no cluster, no runtime: plain torch and diffusers.
"""

from parallel.cost.models import ModelSpec, get_model_spec, registry
from parallel.cost.profile import LayerCost, ModelProfile, profile_model, profile_module
from parallel.cost.specs import DeviceSpec, LinkSpec, Specs, load_specs

__all__ = [
    "DeviceSpec",
    "LayerCost",
    "LinkSpec",
    "ModelProfile",
    "ModelSpec",
    "Specs",
    "get_model_spec",
    "load_specs",
    "profile_model",
    "profile_module",
    "registry",
]
