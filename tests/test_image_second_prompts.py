"""An image job's prompts for a pipeline's second and third text encoders, as the pipelines take them: ``prompt_2`` and
``negative_prompt_2`` (SDXL's second CLIP, Flux's T5, SD3's CLIP-G) and SD3's ``prompt_3``/``negative_prompt_3`` (its
T5). Through the pool, each render equals the pipeline called with them and differs from the render without them (the
prompts reach the encoders); validation refuses each, naming it, where the model's pipeline takes none, and any prompt
that is not text."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_flux import save_tiny_flux
from _tiny_sd3 import save_tiny_sd3
from _tiny_sdxl import save_tiny_sdxl

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from runtime.jobs.image import run_render

BASE = dict(prompt="red and blue stripes", negative_prompt="blurry", steps=3, seed=3, parallel={"strategy": "none"})
SECOND = dict(prompt_2="a green circle", negative_prompt_2="grainy")
CASES = {  # family: (size, job fields: the same arguments to the pipeline)
    "sdxl": ((64, 64), dict(guidance_scale=5.0, **SECOND)),
    "flux": ((64, 48), dict(guidance_scale=3.5, true_cfg_scale=2.0, **SECOND)),  # true CFG: its negative too
    "sd3": ((64, 48), dict(guidance_scale=4.0, **SECOND, prompt_3="yellow dots", negative_prompt_3="dark")),
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("second-prompts")
    return {
        "sdxl": str(save_tiny_sdxl(root / "sdxl")),
        "flux": str(save_tiny_flux(root / "flux")),
        "sd3": str(save_tiny_sd3(root / "sd3")),
    }


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_render_with_them_equals_the_pipeline_called_with_them(pool2, dirs, family):
    (height, width), fields = CASES[family]
    spec = RenderSpec.from_dict(dict(BASE, model=dirs[family], height=height, width=width, **fields))
    prompts = {name: value for name, value in fields.items() if "prompt" in name}
    assert {name: spec.stored()[name] for name in prompts} == prompts
    result = run_render(pool2, spec, progress=False)
    torch.set_num_threads(1)
    call = {"true_cfg_scale": fields["true_cfg_scale"]} if "true_cfg_scale" in fields else {}
    expected = diffusers_image(dirs[family], spec, **prompts, **call)
    error = abs(result.image - expected).max()
    print(f"{family} with {sorted(prompts)}: max abs error against the pipeline {error:.2e}")
    torch.testing.assert_close(torch.tensor(result.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    without = diffusers_image(dirs[family], spec, **call)
    assert abs(without - expected).max() > 1e-4  # the prompts reach the encoders (the tiny Flux: 8e-4)


def test_refusals(dirs, tmp_path):
    from _tiny_qwenimage import save_tiny_qwenimage

    qwen = str(save_tiny_qwenimage(tmp_path / "qwenimage"))
    for model, fields, field in (
        (qwen, dict(prompt_2="a circle"), "prompt_2"),
        (dirs["sdxl"], dict(prompt_3="a circle"), "prompt_3"),
        (dirs["flux"], dict(negative_prompt_3="dark"), "negative_prompt_3"),
        (dirs["sdxl"], dict(prompt_2=["a circle"]), "prompt_2"),
        (dirs["sd3"], dict(negative_prompt_2=3), "negative_prompt_2"),
    ):
        with pytest.raises(SpecError) as err:
            RenderSpec.from_dict(dict(BASE, model=model, height=64, width=64, **fields))
        assert err.value.field == field, (model, fields)
