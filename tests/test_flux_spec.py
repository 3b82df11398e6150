"""An image spec on a Flux model is checked by its family before any worker starts: the size its 2x2 packing
needs, the true-CFG weight (Flux's only), CFG parallel only with that weight on."""

from __future__ import annotations

import pytest
from _tiny_flux import save_tiny_flux

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")


def _refused(**fields) -> SpecError:
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2, **fields})
    return caught.value


@pytest.mark.parametrize("side", ["height", "width"])
def test_a_size_that_is_not_whole_packed_tokens_is_refused(flux_dir, side):
    error = _refused(model=str(flux_dir), **{side: 72})  # 9 latent rows: not whole 2x2 tokens
    assert error.field == side and "multiple of 16" in str(error)


def test_true_cfg_is_refused_for_a_family_weighing_guidance_with_guidance_scale():
    error = _refused(model="builtin-image", true_cfg_scale=4.0)
    assert error.field == "true_cfg_scale" and "sd family" in str(error)


@pytest.mark.parametrize("value", ["4", -1.0, 101])
def test_a_bad_true_cfg_scale_is_refused(flux_dir, value):
    assert _refused(model=str(flux_dir), true_cfg_scale=value).field == "true_cfg_scale"


def test_cfg_parallel_on_flux_needs_true_cfg(flux_dir):
    parallel = {"strategy": "patch", "degree": 2, "cfg": True}
    error = _refused(model=str(flux_dir), guidance_scale=5.0, parallel=parallel)  # distilled guidance only
    assert error.field == "parallel.cfg" and "true_cfg_scale > 1" in str(error)
    error = _refused(model=str(flux_dir), true_cfg_scale=4.0, parallel=parallel)  # no negative prompt: no true CFG
    assert error.field == "parallel.cfg" and "needs a negative_prompt" in str(error)
    spec = RenderSpec.from_dict(
        {"model": str(flux_dir), "height": 64, "width": 64, "true_cfg_scale": 4.0, "negative_prompt": "blurry",
         "parallel": parallel}
    )
    assert spec.placed(spec.model, 2).true_cfg_scale == 4.0


@pytest.mark.parametrize("negative_prompt, branches", [("", 1), ("blurry", 2)])
def test_true_cfg_runs_only_with_a_negative_prompt(flux_dir, negative_prompt, branches):
    """FluxPipeline (and QwenImagePipeline) run true CFG only when given a negative prompt (``do_true_cfg``): called
    with true_cfg_scale=4 and its default negative_prompt=None it runs one branch, and so does a job without one."""
    from diffusers import FluxPipeline

    from pipelines.families.flux import FluxFamily

    pipe = FluxPipeline.from_pretrained(flux_dir, local_files_only=True)
    cond = FluxFamily().encode(pipe, "red stripes", negative_prompt, 3.5, "cpu", (64, 64), true_cfg_scale=4.0)
    assert (cond.negative is not None, cond.guidance_scale) == ((branches == 2), 4.0 if branches == 2 else 1.0)
