"""An image spec on a Qwen-Image model is checked by its family before any worker starts: the size its 2x2 packing
needs, CFG parallel only with true_cfg_scale on, transformers QwenImagePipeline cannot run, models it cannot band."""

from __future__ import annotations

import json
import shutil

import pytest
from _tiny_qwenimage import save_tiny_qwenimage

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwenimage(tmp_path_factory.mktemp("qwenimage") / "tiny-qwenimage")


def _variant(qwen_dir, tmp_path, **transformer):
    """A copy of the tiny pipeline whose transformer config sets ``transformer`` (checks read JSON only)."""
    path = shutil.copytree(qwen_dir, tmp_path / "variant")
    config_file = path / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **transformer}))
    return path


def _refused(**fields) -> SpecError:
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2, **fields})
    return caught.value


@pytest.mark.parametrize("side", ["height", "width"])
def test_a_size_that_is_not_whole_packed_tokens_is_refused(qwen_dir, side):
    error = _refused(model=str(qwen_dir), **{side: 72})  # 9 latent rows: not whole 2x2 tokens
    assert error.field == side and "multiple of 16" in str(error)


def test_cfg_parallel_on_qwenimage_needs_true_cfg(qwen_dir):
    parallel = {"strategy": "patch", "degree": 2, "cfg": True}
    error = _refused(model=str(qwen_dir), guidance_scale=5.0, true_cfg_scale=1.0, parallel=parallel)
    assert error.field == "parallel.cfg" and "true_cfg_scale > 1" in str(error)
    error = _refused(model=str(qwen_dir), true_cfg_scale=4.0, parallel=parallel)  # no negative prompt: no true CFG
    assert error.field == "parallel.cfg" and "needs a negative_prompt" in str(error)
    spec = RenderSpec.from_dict(
        {"model": str(qwen_dir), "height": 64, "width": 64, "true_cfg_scale": 4.0, "negative_prompt": "blurry",
         "parallel": parallel}
    )
    assert spec.placed(spec.model, 2).true_cfg_scale == 4.0


@pytest.mark.parametrize("flag", ["guidance_embeds", "use_additional_t_cond"])
def test_a_transformer_the_pipeline_cannot_run_is_refused_naming_the_model(qwen_dir, tmp_path, flag):
    error = _refused(model=str(_variant(qwen_dir, tmp_path, **{flag: True})))
    assert error.field == "model" and flag in str(error)


def test_a_model_whose_modulation_spans_the_image_runs_on_one_worker_but_not_in_bands(qwen_dir, tmp_path):
    path = str(_variant(qwen_dir, tmp_path, zero_cond_t=True))
    assert RenderSpec.from_dict({"model": path, "height": 64, "width": 64}).parallel.strategy == "none"
    error = _refused(model=path, parallel={"strategy": "patch", "degree": 2})
    assert error.field == "parallel.strategy" and "zero_cond_t" in str(error)


def test_the_cost_model_describes_a_qwenimage_directory(qwen_dir):
    from parallel.cost.profile import profile_model
    from pipelines.families import family_for_dir

    described = family_for_dir(qwen_dir).cost_model(qwen_dir, "float32")
    assert described.kind == "mmdit-shapes" and described.packing == 2 and described.vae_config is None
    assert profile_model(described, 64, 64).flops > 0
