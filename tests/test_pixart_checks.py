"""PixArt's submit-time checks: a size that is not whole patches of latent pixels is refused naming it (it passed and
crashed the worker's patch embedding or step), and a PixArt-Sigma directory whose transformer wants the resolution
micro-conditions its pipeline never passes is refused naming the model."""

from __future__ import annotations

import json
import shutil

import pytest
from _tiny_pixart import save_tiny_pixart

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec


@pytest.fixture(scope="module")
def pixart_dir(tmp_path_factory):
    return save_tiny_pixart(tmp_path_factory.mktemp("pixart") / "tiny-pixart")


def _spec(model, height: int, width: int) -> RenderSpec:
    return RenderSpec.from_dict({"model": str(model), "prompt": "x", "height": height, "width": width})


def test_sizes_of_whole_patches_only(pixart_dir):
    assert _spec(pixart_dir, 64, 48)  # a VAE factor of 8 and patches of 2: multiples of 16
    for height, width, field in ((72, 48, "height"), (64, 40, "width")):
        with pytest.raises(SpecError) as caught:
            _spec(pixart_dir, height, width)
        assert caught.value.field == field and "multiple of 16" in caught.value.message


def test_a_sigma_transformer_wanting_micro_conditions_is_refused(pixart_dir, tmp_path):
    sigma = shutil.copytree(pixart_dir, tmp_path / "sigma")
    index = json.loads((sigma / "model_index.json").read_text())
    (sigma / "model_index.json").write_text(json.dumps({**index, "_class_name": "PixArtSigmaPipeline"}))
    assert _spec(sigma, 64, 48)  # sample size 8: no micro-conditions
    config = sigma / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "use_additional_conditions": True}))
    with pytest.raises(SpecError) as caught:
        _spec(sigma, 64, 48)
    assert caught.value.field == "model" and "use_additional_conditions" in caught.value.message
