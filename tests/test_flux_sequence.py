"""Flux through sequence parallelism (diffusers' own context parallelism, Ulysses and Ring) equals one worker,
through the pool: the family declares the strategy and what its plan splits."""

from __future__ import annotations

import inspect

import pytest
import torch
from _tiny_flux import save_tiny_flux

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families.flux import TEXT_TOKENS
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-seq") / "tiny-flux")


def _spec(model_dir, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "red and blue stripes",
            "height": 64,
            "width": 64,
            "steps": 3,
            "seed": 2,
            "guidance_scale": 3.5,
            "parallel": parallel or {"strategy": "none"},
        }
    )


def test_the_text_tokens_are_flux_pipelines_own_default():
    from diffusers import FluxPipeline

    assert inspect.signature(FluxPipeline.__call__).parameters["max_sequence_length"].default == TEXT_TOKENS


@pytest.mark.parametrize("ring", [1, 2])
def test_flux_sequence_parallel_equals_one_worker(pool2, flux_dir, ring):
    one = run_render(pool2, _spec(flux_dir), progress=False, decode=False)
    result = run_render(pool2, _spec(flux_dir, strategy="sequence", degree=2, ring=ring), progress=False, decode=False)
    torch.testing.assert_close(result.latents, one.latents, atol=1e-4, rtol=1e-4)
    assert result.metadata["strategy"] == "sequence"


def test_a_prompt_length_the_workers_do_not_divide_is_refused_naming_it(flux_dir):
    """Flux's context-parallel plan splits the T5 tokens, padded to the job's max_sequence_length."""
    fields = {"model": str(flux_dir), "height": 64, "width": 64, "parallel": {"strategy": "sequence", "degree": 2}}
    assert RenderSpec.from_dict({**fields, "max_sequence_length": 16}).max_sequence_length == 16
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({**fields, "max_sequence_length": 15})
    assert caught.value.field == "max_sequence_length"


def test_a_size_whose_tokens_do_not_split_is_refused_naming_height(flux_dir):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict(
            {"model": str(flux_dir), "height": 48, "width": 16, "parallel": {"strategy": "sequence", "degree": 2}}
        )
    assert caught.value.field == "height"
