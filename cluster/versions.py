"""Package versions recorded in every job's metadata."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("tessera", "torch", "ray", "diffusers", "transformers", "deepspeed", "hydra-core", "safetensors")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
