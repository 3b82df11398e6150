"""Wan layouts Tessera does not render are refused at submit, naming the model, before any worker starts: a
first-last-frame model (FLF2V, whose transformer takes a last image's tokens too) and a Wan 2.2 directory holding
only its low-noise expert (diffusers' optional-components layout)."""

from __future__ import annotations

import json
import shutil

import pytest
from _tiny_wan_pipeline import save_tiny_wan_pipeline

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("wan") / "tiny-wan")


def _edit(source, target, component: str, change: dict):
    shutil.copytree(source, target)
    config = target / component
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, **change}))
    return target


def _refusal(model) -> SpecError:
    with pytest.raises(SpecError) as caught:
        VideoSpec.from_dict({"model": str(model), "prompt": "x", "frames": 16, "height": 32, "width": 32})
    return caught.value


def test_the_tiny_pipeline_itself_is_taken(wan_dir):
    assert VideoSpec.from_dict({"model": str(wan_dir), "prompt": "x", "frames": 16, "height": 32, "width": 32})


def test_a_first_last_frame_model_is_refused(wan_dir, tmp_path):
    flf = _edit(wan_dir, tmp_path / "flf", "transformer/config.json", {"pos_embed_seq_len": 34})
    error = _refusal(flf)
    assert error.field == "model" and "FLF2V" in error.message


def test_a_low_noise_expert_alone_is_refused(wan_dir, tmp_path):
    shutil.copytree(wan_dir, tmp_path / "low")
    (tmp_path / "low" / "transformer").rename(tmp_path / "low" / "transformer_2")
    index = tmp_path / "low" / "model_index.json"
    data = json.loads(index.read_text())
    data.update(transformer_2=data["transformer"], transformer=[None, None], boundary_ratio=1.0)
    index.write_text(json.dumps(data))
    error = _refusal(tmp_path / "low")
    assert error.field == "model" and "low-noise expert" in error.message
