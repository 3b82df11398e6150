"""An image job's pipeline arguments of prompt encoding, as diffusers' own tests call the pipelines: ``max_sequence_length``
(Flux at 48, Qwen-Image and Sana at 16) and Sana's ``complex_human_instruction`` (``[]``: none, as the pipeline's None).
Through the pool, each render equals the pipeline called with them; Flux's T5 tokens are not masked, so the length
changes its image; validation refuses each option, naming it, where the model's pipeline takes none."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_flux import save_tiny_flux
from _tiny_qwenimage import save_tiny_qwenimage
from _tiny_sana import save_tiny_sana
from _tiny_sdxl import save_tiny_sdxl

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from runtime.jobs.image import run_render

BASE = dict(prompt="red and blue stripes", negative_prompt="blurry", steps=3, seed=3, parallel={"strategy": "none"})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode-options")
    return {
        "flux": str(save_tiny_flux(root / "flux")),
        "qwenimage": str(save_tiny_qwenimage(root / "qwenimage")),
        "sana": str(save_tiny_sana(root / "sana")),
    }


CASES = {  # family: (size, job fields, the same arguments to the pipeline)
    "flux": ((64, 48), dict(guidance_scale=3.5, max_sequence_length=48), dict(max_sequence_length=48)),
    "qwenimage": ((64, 48), dict(max_sequence_length=16), dict(max_sequence_length=16)),
    "sana": (
        (320, 192),
        dict(guidance_scale=4.5, max_sequence_length=16, complex_human_instruction=[]),
        dict(max_sequence_length=16, complex_human_instruction=None, use_resolution_binning=False),
    ),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_render_with_them_equals_the_pipeline_called_with_them(pool2, dirs, family):
    (height, width), fields, call = CASES[family]
    spec = RenderSpec.from_dict(dict(BASE, model=dirs[family], height=height, width=width, **fields))
    assert spec.stored()["max_sequence_length"] == fields["max_sequence_length"]
    result = run_render(pool2, spec, progress=False)
    torch.set_num_threads(1)
    expected = diffusers_image(dirs[family], spec, **call)
    error = abs(result.image - expected).max()
    print(f"{family} with {fields}: max abs error against the pipeline {error:.2e}")
    torch.testing.assert_close(torch.tensor(result.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    if family == "flux":  # no mask over T5's padding: the length changes the image
        default = diffusers_image(dirs[family], spec)
        assert abs(default - expected).max() > 1e-3


def test_refusals(dirs, tmp_path):
    sdxl = str(save_tiny_sdxl(tmp_path / "sdxl"))
    for model, fields, field in (
        (sdxl, dict(max_sequence_length=16), "max_sequence_length"),
        (dirs["flux"], dict(complex_human_instruction=[]), "complex_human_instruction"),
        (dirs["flux"], dict(max_sequence_length=0), "max_sequence_length"),
        (dirs["flux"], dict(max_sequence_length=16.0), "max_sequence_length"),
        (dirs["sana"], dict(complex_human_instruction="be brief"), "complex_human_instruction"),
        (dirs["sana"], dict(complex_human_instruction=[3]), "complex_human_instruction"),
    ):
        with pytest.raises(SpecError) as err:
            RenderSpec.from_dict(dict(BASE, model=model, height=64, width=64, **fields))
        assert err.value.field == field, (model, fields)
