"""Built-in models: names that resolve to diffusers-format directories shipped in this repository."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ModelDirectoryError

BUILTIN_ROOT = Path(__file__).parent


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    """Registry name used in job specs (`model=builtin-image`)."""
    description: str
    """One line for `tessera models` and the README."""
    guidance_scale: float
    """The guidance weight a job on it leaves unset takes (Tessera trained it; its directory's pipeline class,
    diffusers' or Tessera's own, is not where its default comes from)."""

    @property
    def path(self) -> Path:
        return BUILTIN_ROOT / self.name

    @property
    def kind(self) -> str:
        """"image" or "video": the job kind of its model family."""
        from pipelines.families import family_for_dir

        return family_for_dir(self.path).job


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "builtin-image": BuiltinModel(
        "builtin-image", "small latent text-to-image UNet (SD layout, char-level CLIP text encoder)", 5.0
    ),
    "builtin-video": BuiltinModel(
        "builtin-video",
        "small Wan-layout video DiT (trained briefly on procedural moving shapes), per-frame VAE of builtin-image",
        1.0,
    ),
}


def builtin_at(path: str | Path) -> BuiltinModel | None:
    """The built-in model whose directory ``path`` is (None: a directory of the user's)."""
    path = Path(path).resolve()
    return next((model for model in BUILTIN_MODELS.values() if model.path.resolve() == path), None)


def resolve_model(name_or_path: str) -> Path:
    """A built-in model's directory, or a local directory path given as is."""
    if name_or_path in BUILTIN_MODELS:
        path = BUILTIN_MODELS[name_or_path].path
        if not path.is_dir():
            raise ModelDirectoryError(
                f"built-in model {name_or_path!r} is not on disk at {path}; see pipelines/builtin/TRAINING.md"
            )
        return path
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelDirectoryError(
            f"model {name_or_path!r} is neither a built-in model ({', '.join(sorted(BUILTIN_MODELS))}) "
            f"nor an existing directory"
        )
    return path.resolve()


def strip_machine_paths(directory: str | Path) -> list[Path]:
    """Drop the ``_name_or_path`` key from the JSON configs of a saved pipeline or component directory.

    diffusers (and transformers) record there the directory a model was loaded from, a path of the machine
    that saved it, and ``save_pretrained`` writes it back out. The JSON files directly in ``directory`` and
    in its immediate sub-directories are checked; a file is rewritten (key order and indent kept) only when it
    holds the key. Returns the files rewritten.
    """
    directory = Path(directory)
    rewritten = []
    for path in sorted([*directory.glob("*.json"), *directory.glob("*/*.json")]):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "_name_or_path" in data:
            del data["_name_or_path"]
            path.write_text(json.dumps(data, indent=2) + "\n")
            rewritten.append(path)
    return rewritten
