"""SD3 / SD3.5 through the pool equals diffusers' StableDiffusion3Pipeline called directly, and its patch bands
and CFG parallel equal one worker: the family added in its own package (pipelines/families/sd3) and one
registry line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_sd3 import save_tiny_sd3

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families import family_for_dir
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")


def _spec(model_dir, sampler: str = "", **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "red and blue stripes",
            "negative_prompt": "green",
            "height": 80,  # 10 latent rows, 5 patch rows: bands of 6 and 4 rows
            "width": 48,
            "steps": 4,
            "seed": 3,
            "guidance_scale": 4.0,
            "sampler": sampler,
            "parallel": parallel or {"strategy": "none"},
        }
    )


@pytest.fixture(scope="module")
def one_worker(pool2, sd3_dir):
    return run_render(pool2, _spec(sd3_dir), progress=False)


def test_the_registry_finds_the_sd3_family(sd3_dir):
    family = family_for_dir(sd3_dir)
    assert family.name == "sd3" and family.job == "image"
    assert family.band_alignment(sd3_dir) == 2  # the transformer's patch size
    assert _spec(sd3_dir).sampler == "pipeline"  # the directory's own flow-matching scheduler


def test_sd3_render_equals_diffusers(one_worker, sd3_dir):
    expected = diffusers_image(sd3_dir, _spec(sd3_dir))
    assert one_worker.image.shape == (80, 48, 3)
    assert one_worker.image.std() > 0.01  # not a flat image
    torch.testing.assert_close(torch.tensor(one_worker.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_dynamic_shifting_sets_mu_as_the_pipeline_does(pool2, sd3_dir, tmp_path):
    """A scheduler with ``use_dynamic_shifting`` takes ``mu`` from the image's token count (calculate_shift)."""
    path = tmp_path / "sd3-dynamic"
    shutil.copytree(sd3_dir, path)
    config = path / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "use_dynamic_shifting": True}))
    spec = _spec(path, sampler="flow-euler")
    result = run_render(pool2, spec, progress=False)
    torch.testing.assert_close(
        torch.tensor(result.image), torch.tensor(diffusers_image(path, spec)), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("cfg", [False, True], ids=["patch", "cfg"])
def test_sd3_patch_bands_equal_one_worker(pool2, one_worker, sd3_dir, cfg):
    spec = _spec(sd3_dir, strategy="patch", degree=2, mode="sync", cfg=cfg)
    result = run_render(pool2, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, one_worker.latents, atol=1e-4, rtol=1e-4)
    workers = result.metadata["workers"]
    if cfg:
        assert sorted(w["branch"] for w in workers) == ["cond", "uncond"]
    else:
        assert [w["rows"] for w in workers] == [[0, 6], [6, 10]]
        assert all(w["bytes_sent_per_step_by_kind"].get("kv", 0) > 0 for w in workers)


def test_a_beta_schedule_sampler_is_refused_naming_the_field(sd3_dir):
    with pytest.raises(SpecError) as caught:
        _spec(sd3_dir, sampler="euler")
    assert caught.value.field == "sampler" and "flow-euler" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "height", "width", "why"),
    [("height", 72, 48, "multiple of 16"), ("width", 64, 272, "at most 256px")],
    ids=["not-whole-patches", "beyond-the-positions"],
)
def test_a_size_the_pipeline_cannot_render_is_refused_naming_the_field(sd3_dir, field, height, width, why):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"model": str(sd3_dir), "height": height, "width": width})
    assert caught.value.field == field and why in str(caught.value)
