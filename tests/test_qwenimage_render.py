"""Qwen-Image through the pool equals diffusers' QwenImagePipeline called directly (with and without its true CFG,
norm rescale included), and its patch bands (and CFG branches) equal one worker: the family in
pipelines/families/qwenimage and one registry line."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import diffusers_image
from _tiny_qwenimage import save_tiny_qwenimage

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families import family_for_dir
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwenimage(tmp_path_factory.mktemp("qwenimage") / "tiny-qwenimage")


def _spec(model_dir, true_cfg_scale: float = 1.0, sampler: str = "", **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "red and blue stripes",
            "negative_prompt": "blurry",  # shorter than the prompt: the batched branches are padded and masked
            "height": 64,
            "width": 48,
            "steps": 3,
            "seed": 3,
            "true_cfg_scale": true_cfg_scale,
            "sampler": sampler,
            "parallel": parallel or {"strategy": "none"},
        }
    )


def test_the_registry_finds_the_qwenimage_family(qwen_dir):
    family = family_for_dir(qwen_dir)
    assert family.name == "qwenimage" and family.job == "image"
    assert family.band_alignment(qwen_dir) == 2  # 2x2 packed tokens
    assert family.latent_factor(qwen_dir) == 8
    assert family.size_error(qwen_dir, 64, 48) is None  # whole 2x2 tokens of the VAE's 8x8 pixels
    assert _spec(qwen_dir).sampler == "pipeline"  # the directory's own flow-matching scheduler


@pytest.mark.parametrize(
    "true_cfg_scale, sampler", [(1.0, ""), (4.0, "flow-euler")], ids=["no-cfg", "true-cfg"]
)
def test_qwenimage_render_equals_diffusers(pool2, qwen_dir, true_cfg_scale, sampler):
    spec = _spec(qwen_dir, true_cfg_scale, sampler)
    result = run_render(pool2, spec, progress=False)
    torch.set_num_threads(1)
    expected = diffusers_image(qwen_dir, spec, true_cfg_scale=true_cfg_scale)
    assert result.image.shape == (64, 48, 3) and result.image.std() > 0.01
    torch.testing.assert_close(torch.tensor(result.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [False, True], ids=["bands", "cfg-branches"])
def test_qwenimage_patch_bands_equal_one_worker(pool2, qwen_dir, cfg):
    one = run_render(pool2, _spec(qwen_dir, 4.0), progress=False, decode=False)
    spec = _spec(qwen_dir, 4.0, strategy="patch", degree=2, mode="sync", cfg=cfg)
    result = run_render(pool2, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, one.latents, atol=1e-4, rtol=1e-4)
    workers = result.metadata["workers"]
    if cfg:
        assert sorted(w["branch"] for w in workers) == ["cond", "uncond"]
    else:
        assert [w["rows"] for w in workers] == [[0, 4], [4, 8]]
        assert all(w["bytes_sent_per_step_by_kind"].get("kv", 0) > 0 for w in workers)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpm++"])
def test_a_beta_schedule_sampler_is_refused_naming_the_field(qwen_dir, sampler):
    with pytest.raises(SpecError) as caught:
        _spec(qwen_dir, sampler=sampler)
    assert caught.value.field == "sampler" and "qwenimage" in str(caught.value)
