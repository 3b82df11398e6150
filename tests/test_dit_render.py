"""A DiT pipeline (PixArt-alpha, tiny) renders through the Ray pool: one worker equals diffusers'
PixArtAlphaPipeline called directly; patch parallel (token bands) and CFG parallel equal one worker."""

import numpy as np
import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_pixart import save_tiny_pixart

from cluster.jobs.image import ParallelSpec, RenderSpec
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def pixart_dir(tmp_path_factory):
    return save_tiny_pixart(tmp_path_factory.mktemp("models") / "pixart")


def _spec(model, **parallel) -> RenderSpec:
    spec = RenderSpec(
        model=str(model),
        prompt="red and green stripes",
        height=64,
        width=48,
        steps=4,
        seed=6,
        guidance_scale=4.5,
        sampler="dpm++",
        parallel=ParallelSpec(**parallel) if parallel else ParallelSpec(),
    )
    spec.validate()
    return spec


def _diffusers_image(model_dir, spec: RenderSpec) -> np.ndarray:
    torch.set_num_threads(1)
    return diffusers_image(model_dir, spec, negative_prompt="", clean_caption=False, use_resolution_binning=False)


@pytest.fixture(scope="module")
def one_worker(pool2, pixart_dir):
    return run_render(pool2, _spec(pixart_dir), progress=False)


def test_pixart_render_equals_the_diffusers_pipeline(one_worker, pixart_dir):
    expected = _diffusers_image(pixart_dir, _spec(pixart_dir))
    assert one_worker.image.shape == (64, 48, 3)
    assert one_worker.image.std() > 0.01  # not a flat image
    torch.testing.assert_close(torch.tensor(one_worker.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [False, True], ids=["patch", "cfg"])
def test_pixart_token_bands_equal_one_worker(pool2, one_worker, pixart_dir, cfg):
    spec = _spec(pixart_dir, strategy="patch", degree=2, mode="sync", cfg=cfg)
    result = run_render(pool2, spec, progress=False)
    torch.testing.assert_close(result.latents, one_worker.latents, atol=1e-4, rtol=1e-4)
    workers = result.metadata["workers"]
    if cfg:
        assert sorted(w["branch"] for w in workers) == ["cond", "uncond"]
    else:
        assert [w["rows"] for w in workers] == [[0, 4], [4, 8]]
        assert all(w["bytes_sent_per_step_by_kind"].get("kv", 0) > 0 for w in workers)


def test_patch_on_a_dit_other_than_pixart_is_refused_naming_the_field(tmp_path):
    import json
    import shutil

    from cluster.errors import SpecError

    path = tmp_path / "dit"
    shutil.copytree(save_tiny_pixart(tmp_path / "src"), path)
    config = path / "transformer" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "_class_name": "DiTTransformer2DModel"}))
    with pytest.raises(SpecError) as caught:
        _spec(path, strategy="patch", degree=2)
    assert caught.value.field == "parallel.strategy" and "DiTTransformer2DModel" in str(caught.value)
