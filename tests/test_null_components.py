"""A pipeline directory that saved a component its diffusers class needs as null (SD3 without its T5, as
``StableDiffusion3Pipeline(text_encoder_3=None, ...)`` saves) is refused at submit naming the model and the
component; diffusers would refuse it only when a worker loads it. Optional ones (its null image encoder) pass."""

from __future__ import annotations

import json
import shutil

import pytest
from _tiny_sd3 import save_tiny_sd3

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")


def _spec(model) -> RenderSpec:
    return RenderSpec.from_dict({"model": str(model), "prompt": "x", "height": 32, "width": 32})


def test_a_required_component_saved_as_null_is_refused(sd3_dir, tmp_path):
    assert _spec(sd3_dir)
    shutil.copytree(sd3_dir, tmp_path / "no-t5")
    index = tmp_path / "no-t5" / "model_index.json"
    data = json.loads(index.read_text())
    data.update(text_encoder_3=[None, None], tokenizer_3=[None, None])
    index.write_text(json.dumps(data))
    with pytest.raises(SpecError) as caught:
        _spec(tmp_path / "no-t5")
    assert caught.value.field == "model" and "text_encoder_3, tokenizer_3" in caught.value.message


def test_a_component_entry_that_is_not_library_and_class_is_refused(sd3_dir, tmp_path):
    shutil.copytree(sd3_dir, tmp_path / "bad")
    index = tmp_path / "bad" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "vae": []}))
    with pytest.raises(SpecError) as caught:
        _spec(tmp_path / "bad")
    assert caught.value.field == "model" and "vae is [], not [library, class]" in caught.value.message
