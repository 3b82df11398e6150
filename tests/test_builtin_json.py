"""Saved pipeline configs name no directory of the machine that wrote them (no `_name_or_path`, no absolute path).

diffusers records in `_name_or_path` the directory a model was loaded from and `save_pretrained` writes it
back; the built-in models' writers and the training export drop it (`pipelines.builtin.strip_machine_paths`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.builtin import BUILTIN_ROOT, resolve_model, strip_machine_paths

# An absolute path of some machine: "/work/...", "/home/...", "C:\\...". Tokenizer merges such as "/ </w>" are not.
_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/])[\w.-]+([\\/][^\s]*)?$")


def _machine_paths(path: Path) -> list[str]:
    """`_name_or_path`-like keys and absolute-path string values anywhere in one JSON file."""
    found = []

    def walk(value, where):
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("name_or_path"):
                    found.append(f"{where}.{key}")
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
        elif isinstance(value, str) and _ABSOLUTE.match(value):
            found.append(f"{where} = {value!r}")

    walk(json.loads(path.read_text()), path.name)
    return found


def _all_machine_paths(root: Path) -> dict[str, list[str]]:
    files = sorted(root.rglob("*.json"))
    assert files, f"no JSON under {root}"
    return {str(p.relative_to(root)): found for p in files if (found := _machine_paths(p))}


def test_the_pattern_tells_paths_from_tokens():
    assert _ABSOLUTE.match("/work/main/outputs/train/pipeline/vae") and _ABSOLUTE.match("/tmp")
    assert not any(_ABSOLUTE.match(s) for s in ("/", "/</w>", "/ </w>", "a/b", "float32"))


def test_committed_builtin_configs_name_no_machine_path():
    assert _all_machine_paths(BUILTIN_ROOT) == {}


def test_write_builtin_video_strips_the_vae_source_path(tmp_path):
    from pipelines.builtin.video import write_builtin_video

    assert _all_machine_paths(write_builtin_video(tmp_path / "video")) == {}


@pytest.mark.parametrize("weights_only", [False, True])
def test_save_video_pipeline_strips_source_paths(tmp_path, weights_only):
    from pipelines.builtin.video import save_video_pipeline, write_builtin_video
    from pipelines.families.wan.loading import load_video_pipeline

    start = write_builtin_video(tmp_path / "start")
    pipe = load_video_pipeline(start)
    target = start if weights_only else tmp_path / "saved"  # weights_only writes into a whole pipeline
    save_video_pipeline(pipe, target, weights_only=weights_only)
    assert _all_machine_paths(target) == {}


def test_an_exported_image_pipeline_loads_without_its_source_path(tmp_path):
    """As `export=true` does: save_pretrained (which writes the source path), then strip_machine_paths."""
    from pipelines.loading import load_pipeline

    pipe = load_pipeline(resolve_model("builtin-image"))
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    assert _all_machine_paths(tmp_path)  # diffusers wrote where it loaded from
    index = json.loads((tmp_path / "model_index.json").read_text())
    rewritten = strip_machine_paths(tmp_path)
    assert tmp_path / "model_index.json" in rewritten and _all_machine_paths(tmp_path) == {}
    index.pop("_name_or_path")
    assert json.loads((tmp_path / "model_index.json").read_text()) == index
    assert strip_machine_paths(tmp_path) == []  # nothing left: files untouched
    assert load_pipeline(tmp_path).unet.config.in_channels == pipe.unet.config.in_channels
