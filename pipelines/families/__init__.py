"""Model families: one home per kind of diffusers pipeline, looked up by the classes a directory names.

``FAMILIES`` is the registry: adding a family is its own package plus one line here. A directory's
family is found from its ``model_index.json``: the pipeline class (``_class_name``) names it. Nothing
outside this package tests a model's class name; the runtime and the service ask the family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.errors import ModelDirectoryError
from pipelines.families.base import Conditioning, ModelFamily
from pipelines.families.cogvideox import COGVIDEOX
from pipelines.families.flux import FLUX
from pipelines.families.hunyuanvideo import HUNYUANVIDEO
from pipelines.families.ltx import LTX
from pipelines.families.pixart import PIXART
from pipelines.families.qwenimage import QWENIMAGE
from pipelines.families.sana import SANA
from pipelines.families.sd import SD
from pipelines.families.sd3 import SD3
from pipelines.families.sdxl import SDXL
from pipelines.families.wan import WAN

FAMILIES: tuple[ModelFamily, ...] = (SD, SDXL, PIXART, WAN, SD3, SANA, FLUX, QWENIMAGE, LTX, HUNYUANVIDEO, COGVIDEOX)

_BY_PIPELINE = {pipeline: family for family in FAMILIES for pipeline in family.pipelines}

__all__ = [
    "FAMILIES",
    "Conditioning",
    "ModelFamily",
    "denoiser_classes",
    "family_for_dir",
    "family_for_index",
    "family_of",
]


def family_for_index(index: dict, where: str | Path = "model_index.json") -> ModelFamily:
    """The family serving the pipeline class a model_index.json names."""
    name = index.get("_class_name")
    family = _BY_PIPELINE.get(name)
    if family is None:
        known = ", ".join(sorted(_BY_PIPELINE))
        raise ModelDirectoryError(f"{where}: no model family serves the pipeline class {name!r} (known: {known})")
    return family


def family_for_dir(path: str | Path) -> ModelFamily:
    """The family of a pipeline directory, its model_index.json and components checked first."""
    from pipelines.loading import check_pipeline_dir

    path = Path(path)
    index = check_pipeline_dir(path)
    family = family_for_index(index, path / "model_index.json")
    family.check_dir(path, index)
    return family


def family_of(pipe: Any) -> ModelFamily:
    """The family of a loaded pipeline (a diffusers pipeline, or a family's own pipeline object)."""
    name = getattr(pipe, "pipeline_class", None) or type(pipe).__name__
    return family_for_index({"_class_name": name}, f"{type(pipe).__name__} object")


def denoiser_classes(job: str) -> list[str]:
    """The denoiser classes the families of one job kind ("image", "video") render, for error messages."""
    return [name for family in FAMILIES if family.job == job for name in family.denoisers]
