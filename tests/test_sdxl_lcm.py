"""An LCM-distilled SDXL UNet (``time_cond_proj_dim``, as LCM-SDXL's) takes the guidance weight as an input: its
pipeline passes ``timestep_cond`` and runs no negative branch. Tessera renders it as the pipeline does, and refuses
to split guidance branches it does not have."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_sdxl import save_tiny_sdxl

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def lcm_dir(tmp_path_factory):
    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl-lcm") / "tiny-sdxl-lcm", time_cond_proj_dim=16)


def _spec(model_dir, guidance: float, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "red and blue stripes",
            "negative_prompt": "blurry",
            "height": 64,
            "width": 48,
            "steps": 3,
            "seed": 3,
            "guidance_scale": guidance,
            "sampler": "euler",
            "parallel": parallel or {"strategy": "none"},
        }
    )


def test_an_lcm_unet_renders_as_its_pipeline(pool2, lcm_dir):
    images = {}
    for guidance in (1.0, 6.0):
        spec = _spec(lcm_dir, guidance)
        assert not spec.guides()
        result = run_render(pool2, spec, progress=False)
        torch.testing.assert_close(
            torch.tensor(result.image), torch.tensor(diffusers_image(lcm_dir, spec)), atol=1e-5, rtol=1e-5
        )
        images[guidance] = result.image
    assert abs(images[6.0] - images[1.0]).max() > 1e-3  # the weight reaches the UNet


def test_cfg_parallel_is_refused_naming_it(lcm_dir):
    with pytest.raises(SpecError) as caught:
        _spec(lcm_dir, 6.0, strategy="patch", degree=2, cfg=True)
    assert caught.value.field == "parallel.cfg" and "time_cond_proj_dim" in caught.value.message
