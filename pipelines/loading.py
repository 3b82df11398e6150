"""Load diffusers-format pipelines and models from local directories, with errors that say what is wrong.

Only safetensors weights are loaded: a directory holding pickled `.bin` weights alone is refused,
since unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.errors import ModelDirectoryError

WEIGHT_SUFFIX = ".safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype: unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelDirectoryError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path} must hold a JSON object")
    return data


def _require_directory(path: Path) -> None:
    if not path.exists():
        raise ModelDirectoryError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelDirectoryError(f"model path {path} is not a directory")


def _check_model_subdir(path: Path, what: str) -> dict:
    """A diffusers/transformers model folder: a config.json and safetensors weights."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelDirectoryError(f"{what} at {path} has no config.json")
    weights = list(path.glob(f"*{WEIGHT_SUFFIX}"))
    if not weights:
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        if pickles:
            raise ModelDirectoryError(
                f"{what} at {path} has only pickled weights ({', '.join(pickles)}); "
                "Tessera loads safetensors only"
            )
        raise ModelDirectoryError(f"{what} at {path} has no {WEIGHT_SUFFIX} weights")
    return _read_json(config)


def check_pipeline_dir(path: str | Path) -> dict:
    """Validate a diffusers pipeline directory and return its model_index.json."""
    path = Path(path)
    _require_directory(path)
    index_file = path / "model_index.json"
    if not index_file.is_file():
        hint = (
            " (it holds a single model's config.json, not a pipeline)"
            if (path / "config.json").exists()
            else ""
        )
        raise ModelDirectoryError(f"model directory {path} has no model_index.json{hint}")
    index = _read_json(index_file)
    if "_class_name" not in index:
        raise ModelDirectoryError(f"{index_file} has no _class_name")
    for component, entry in index.items():
        if not component.startswith("_") and isinstance(entry, list) and len(entry) != 2:
            raise ModelDirectoryError(f"{index_file}: {component} is {entry!r}, not [library, class]")
    missing = [
        c
        for c, e in index.items()
        if not c.startswith("_") and isinstance(e, list) and e[0] is None and c not in ALWAYS_OPTIONAL
    ]
    required = [c for c in missing if c not in _optional_components(index["_class_name"], missing)] if missing else []
    if required:
        raise ModelDirectoryError(
            f"model directory {path}: its {index['_class_name']} needs {', '.join(required)}, saved as null in "
            "model_index.json (diffusers loads none of it without them)"
        )
    for component, entry in index.items():
        if component.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        sub = path / component
        if not sub.is_dir():
            raise ModelDirectoryError(f"model directory {path} lacks component folder {component}/")
        if (sub / "config.json").exists() or component in ("unet", "vae", "transformer", "text_encoder"):
            _check_model_subdir(sub, f"component {component}")
    return index


ALWAYS_OPTIONAL = frozenset({"safety_checker", "feature_extractor", "image_encoder", "image_processor"})
"""Components optional in every diffusers pipeline that names them (the image pipelines' safety checker, IP-Adapter
image encoders): a directory that saves them as null is checked without importing diffusers."""


def _optional_components(class_name: str, missing: list[str]) -> list[str]:
    """The components diffusers' pipeline class ``class_name`` loads without (its ``_optional_components``), or
    all of ``missing`` for a class diffusers does not have (the family check refuses it by name). Read only for a
    directory that saved a component as null, so validating a complete one imports no pipeline code."""
    import diffusers

    pipeline = getattr(diffusers, class_name, None)
    return missing if pipeline is None else list(getattr(pipeline, "_optional_components", None) or [])


def load_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    """A diffusers pipeline from a local directory, in eval mode, on `device`."""
    import diffusers
    from diffusers import DiffusionPipeline

    index = check_pipeline_dir(path)
    diffusers.utils.logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(
            str(path), dtype=parse_dtype(dtype), local_files_only=True, use_safetensors=True
        )
    except Exception as err:  # diffusers raises many kinds; name the directory in all of them
        raise ModelDirectoryError(f"could not load {index['_class_name']} from {path}: {err}") from err
    pipe.to(device)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu") -> torch.nn.Module:
    """A single diffusers model (UNet, VAE, DiT/PixArt transformer...) from its local directory."""
    import diffusers

    path = Path(path)
    _require_directory(path)
    config = _check_model_subdir(path, "model")
    class_name = config.get("_class_name")
    model_class = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if model_class is None:
        raise ModelDirectoryError(
            f"{path / 'config.json'} names no diffusers model class (_class_name={class_name!r})"
        )
    try:
        model = model_class.from_pretrained(
            str(path), dtype=parse_dtype(dtype), local_files_only=True, use_safetensors=True
        )
    except Exception as err:
        raise ModelDirectoryError(f"could not load {class_name} from {path}: {err}") from err
    return model.to(device).eval()


def load_video_parts(path: str | Path, index: dict, dtype: str = "float32", device: str = "cpu") -> tuple:
    """The parts of a text-to-video pipeline directory a video family's pipeline object is made of, in eval mode
    on ``device``: (transformer, vae, text encoder, tokenizer, scheduler config, scheduler class), the text classes
    and the scheduler's as ``index`` (its model_index.json) names them."""
    import diffusers
    import transformers

    path = Path(path)
    transformer = load_model(path / "transformer", dtype, device)
    vae = load_model(path / "vae", dtype, device)
    try:
        text_class = getattr(transformers, index["text_encoder"][1])
        tokenizer_class = getattr(transformers, index["tokenizer"][1])
        text_encoder = text_class.from_pretrained(
            path / "text_encoder", dtype=parse_dtype(dtype), use_safetensors=True, local_files_only=True
        )
        tokenizer = tokenizer_class.from_pretrained(path / "tokenizer", local_files_only=True)
        scheduler_class = getattr(diffusers, index["scheduler"][1])
    except (AttributeError, OSError, TypeError, ValueError) as err:
        raise ModelDirectoryError(f"could not load the video pipeline at {path}: {err}") from err
    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return transformer, vae, text_encoder.to(device).eval(), tokenizer, scheduler_config, scheduler_class
