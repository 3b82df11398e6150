"""SDXL through the pool equals diffusers' StableDiffusionXLPipeline called directly, and its patch bands
equal one worker: the family added in one module (pipelines/families/sdxl) and one registry line."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_sdxl import save_tiny_sdxl

from cluster.errors import SpecError
from cluster.jobs.image import ParallelSpec, RenderSpec
from pipelines.families import family_for_dir
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


def _spec(model_dir, height: int = 64, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "red and blue stripes",
            "negative_prompt": "blurry",
            "height": height,
            "width": 48,
            "steps": 4,
            "seed": 3,
            "guidance_scale": 4.0,
            "sampler": "euler",
            "parallel": parallel or {"strategy": "none"},
        }
    )




def test_the_registry_finds_the_sdxl_family(sdxl_dir):
    family = family_for_dir(sdxl_dir)
    assert family.name == "sdxl" and family.job == "image"
    assert family.band_alignment(sdxl_dir) == 2  # one stride-2 downsample


def test_sdxl_render_equals_diffusers(pool2, sdxl_dir):
    spec = _spec(sdxl_dir)
    result = run_render(pool2, spec, progress=False)
    torch.testing.assert_close(
        torch.tensor(result.image), torch.tensor(diffusers_image(sdxl_dir, spec)), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("cfg", [False, True])
def test_sdxl_patch_bands_equal_one_worker(pool2, sdxl_dir, cfg):
    one = run_render(pool2, _spec(sdxl_dir), progress=False, decode=False)
    bands = _spec(sdxl_dir, strategy="patch", degree=2, mode="sync", cfg=cfg)
    result = run_render(pool2, bands, progress=False, decode=False)
    torch.testing.assert_close(result.latents, one.latents, atol=1e-4, rtol=1e-4)
    assert isinstance(bands.parallel, ParallelSpec)


def test_an_sdxl_spec_is_checked_by_its_family(sdxl_dir):
    with pytest.raises(SpecError) as caught:
        _spec(sdxl_dir, height=16, strategy="patch", degree=2)  # 2 latent rows: one band of the UNet's 2
    assert caught.value.field == "parallel.degree"


def test_the_cost_model_describes_an_sdxl_directory(sdxl_dir):
    from parallel.cost.profile import profile_model

    described = family_for_dir(sdxl_dir).cost_model(sdxl_dir, "float32")
    assert described.extra == {"text_embeds": 32, "time_ids": 6}  # the pooled text and the time ids
    assert profile_model(described, 64, 48).flops > 0
