"""First Block Cache and TeaCache decide at a transformer's first block and take the stack's residual at its last,
so they need two blocks at least. A job asking for either on a one-block denoiser is refused at validation, naming
``cache.mode``, from the count in the denoiser's config.json: the same count, and the same rule, as the cache's own
when a worker attaches it to the loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_flux import tiny_flux_transformer
from _tiny_qwenimage import tiny_qwen_transformer
from _tiny_sana import tiny_sana_transformer
from _tiny_sd3 import save_tiny_sd3, tiny_sd3_transformer

from cluster.errors import SpecError
from cluster.jobs import parse_job
from parallel.cache.config import CacheConfig
from parallel.cache.first_block import FirstBlockCache, transformer_blocks
from pipelines.families import FAMILIES


@pytest.fixture(scope="module")
def one_block_sd3(tmp_path_factory) -> Path:
    """A tiny saved SD3 pipeline whose transformer has one block."""
    path = save_tiny_sd3(tmp_path_factory.mktemp("one-block") / "sd3")
    tiny_sd3_transformer(num_layers=1).save_pretrained(path / "transformer", safe_serialization=True)
    return path


def _job(model: Path, mode: str):
    return parse_job(
        {"model": str(model), "height": 32, "width": 32, "steps": 4, "cache": {"mode": mode, "warmup_steps": 0}}
    )


def test_a_stack_cache_on_a_one_block_denoiser_is_refused_at_validation(one_block_sd3):
    for mode in ("first-block", "teacache"):
        with pytest.raises(SpecError) as caught:
            _job(one_block_sd3, mode)
        assert caught.value.field == "cache.mode"
        assert f"{mode} needs at least 2 transformer blocks" in str(caught.value)
        assert "has 1" in str(caught.value)
    assert _job(one_block_sd3, "taylorseer").cache.mode == "taylorseer"  # it extrapolates the whole prediction


@pytest.mark.parametrize(
    "family, build",
    [
        ("sd3", lambda: tiny_sd3_transformer(num_layers=1)),
        ("sd3", lambda: tiny_sd3_transformer()),
        ("flux", tiny_flux_transformer),  # one double-stream block and one single-stream block
        ("flux", lambda: _with(tiny_flux_transformer(), num_single_layers=0)),
        ("sana", lambda: _with(tiny_sana_transformer(), num_layers=1)),
        ("sana", tiny_sana_transformer),
        ("qwenimage", tiny_qwen_transformer),
    ],
)
def test_validation_counts_the_blocks_the_cache_hooks(family, build, tmp_path):
    model = build()
    model.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    family = next(f for f in FAMILIES if f.name == family)
    blocks = len(transformer_blocks(model))
    assert family.transformer_blocks(tmp_path) == blocks
    refused = family.cache_error(tmp_path, CacheConfig(mode="first-block"))
    family.prepare_cache(model)
    try:
        FirstBlockCache(model, CacheConfig(mode="first-block"), first_step=0).close()
        attached = True
    except ValueError as err:
        attached = False
        assert refused is not None and refused[1] in str(err).replace(type(model).__name__, f"{tmp_path.name}'s denoiser")
    assert (refused is None) == attached == (blocks >= 2)


def _with(model, **changes):
    """A model of the same class as ``model`` with config fields changed."""
    return type(model).from_config({**model.config, **changes})
