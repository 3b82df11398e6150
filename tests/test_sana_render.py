"""Sana through the pool equals diffusers' SanaPipeline called directly, and its patch bands equal one worker: the
family added in its own package (pipelines/families/sana) and one registry line."""

from __future__ import annotations

import inspect

import pytest
import torch
from _diffusers_reference import diffusers_image, diffusers_output
from _tiny_sana import save_tiny_sana

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families import family_for_dir
from runtime.jobs.image import run_render


@pytest.fixture(scope="module")
def sana_dir(tmp_path_factory):
    return save_tiny_sana(tmp_path_factory.mktemp("sana") / "tiny-sana")


def _spec(model_dir, height: int = 320, sampler: str = "", **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": "a red circle on blue stripes",
            "negative_prompt": "blurry",
            "height": height,
            "width": 192,
            "steps": 4,
            "seed": 3,
            "guidance_scale": 4.5,
            "sampler": sampler,
            "parallel": parallel or {"strategy": "none"},
        }
    )


@pytest.fixture(scope="module")
def one_worker(pool2, sana_dir):
    return run_render(pool2, _spec(sana_dir), progress=False)


def test_the_registry_finds_the_sana_family(sana_dir):
    family = family_for_dir(sana_dir)
    assert family.name == "sana" and family.job == "image"
    assert family.band_alignment(sana_dir) == 1  # the transformer's patch size
    assert family.latent_factor(sana_dir) == 32  # the DC-AE's six levels
    assert _spec(sana_dir).sampler == "pipeline"  # the directory's own DPM-Solver++ with flow sigmas


def test_the_prompt_is_encoded_with_the_pipelines_complex_human_instruction(sana_dir):
    """The family calls encode_prompt with __call__'s default instruction (encode_prompt's own default is none)."""
    from pipelines.loading import load_pipeline

    pipe = load_pipeline(sana_dir)
    cond = family_for_dir(sana_dir).encode(pipe, "a red circle", "blurry", 4.5, pipe.device)
    instruction = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
    assert instruction  # diffusers' default list

    def encoded(**extra):
        return pipe.encode_prompt(prompt="a red circle", negative_prompt="blurry", device=pipe.device, **extra)

    with_instruction, mask, negative, negative_mask = encoded(complex_human_instruction=instruction)
    torch.testing.assert_close(cond.positive["encoder_hidden_states"], with_instruction, atol=0, rtol=0)
    torch.testing.assert_close(cond.positive["encoder_attention_mask"], mask, atol=0, rtol=0)
    torch.testing.assert_close(cond.negative["encoder_hidden_states"], negative, atol=0, rtol=0)
    torch.testing.assert_close(cond.negative["encoder_attention_mask"], negative_mask, atol=0, rtol=0)
    assert not torch.allclose(encoded()[0], with_instruction)  # the instruction changes what the model reads


def test_sana_render_equals_diffusers(one_worker, sana_dir):
    spec = _spec(sana_dir)
    torch.set_num_threads(1)
    expected = diffusers_image(sana_dir, spec, use_resolution_binning=False)
    assert one_worker.image.shape == (320, 192, 3)
    assert one_worker.latents.shape == (1, 8, 10, 6)  # 32x: 10 latent rows
    assert one_worker.image.std() > 0.01  # not a flat image
    error = abs(one_worker.image - expected).max()
    print(f"sana one worker vs SanaPipeline: max abs error {error:.2e}")
    torch.testing.assert_close(torch.tensor(one_worker.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_sana_render_with_flow_euler_equals_diffusers(pool2, sana_dir):
    """The other sampler that fits: FlowMatchEuler built from the directory's config, as a user swaps it in."""
    spec = _spec(sana_dir, sampler="flow-euler")
    result = run_render(pool2, spec, progress=False)
    torch.set_num_threads(1)
    expected = diffusers_image(sana_dir, spec, use_resolution_binning=False)
    print(f"sana flow-euler vs SanaPipeline: max abs error {abs(result.image - expected).max():.2e}")
    torch.testing.assert_close(torch.tensor(result.image), torch.tensor(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [False, True], ids=["bands", "cfg"])
def test_sana_patch_bands_equal_one_worker(pool2, one_worker, sana_dir, cfg):
    result = run_render(pool2, _spec(sana_dir, strategy="patch", degree=2, mode="sync", cfg=cfg), progress=False)
    error = (result.latents - one_worker.latents).abs().max().item()
    print(f"sana patch sync x2 (cfg={cfg}) vs one worker: max abs error {error:.2e}")
    torch.testing.assert_close(result.latents, one_worker.latents, atol=1e-4, rtol=1e-4)
    workers = result.metadata["workers"]
    if cfg:  # one band, the two guidance branches on the two workers
        assert sorted(w["branch"] for w in workers) == ["cond", "uncond"]
    else:
        assert [w["rows"] for w in workers] == [[0, 5], [5, 10]]
        assert all(w["bytes_sent_per_step_by_kind"].get("linear", 0) > 0 for w in workers)
        assert all("kv" not in w["bytes_sent_per_step_by_kind"] for w in workers)


def test_sana_bands_resumed_on_one_worker_equal_one_worker(pool2, one_worker, sana_dir):
    """Two steps on two bands, the state (latent, DPM-Solver's history) stitched, the rest on one worker."""
    first = run_render(pool2, _spec(sana_dir, strategy="patch", degree=2, mode="sync"), until=2, progress=False, decode=False)
    assert first.checkpoint["step_index"] == 2
    rest = run_render(pool2, _spec(sana_dir), resume=first.checkpoint, progress=False, decode=False)
    torch.testing.assert_close(rest.latents, one_worker.latents, atol=1e-4, rtol=1e-4)


def test_a_sampler_for_noise_prediction_is_refused_naming_the_field(sana_dir):
    with pytest.raises(SpecError) as caught:
        _spec(sana_dir, sampler="ddim")
    assert caught.value.field == "sampler" and "sana" in str(caught.value)


def test_a_size_the_pipeline_refuses_is_refused_naming_the_field(sana_dir):
    with pytest.raises(SpecError) as caught:
        _spec(sana_dir, height=336)  # a multiple of 8 and 16, not of SanaPipeline's 32
    assert caught.value.field == "height" and "32" in str(caught.value)


def test_too_few_latent_rows_for_the_bands_are_refused_naming_the_field(sana_dir):
    with pytest.raises(SpecError) as caught:
        _spec(sana_dir, height=64, strategy="patch", degree=3)  # 2 latent rows at 32x, not 8 at 8x
    assert caught.value.field == "parallel.degree"


def test_bfloat16_equals_diffusers_and_resumes_unrounded(sana_dir):
    """In bfloat16 (as GPU farms render), one worker's latents equal ``SanaPipeline``'s bit for bit and a render
    resumed from a checkpoint equals the uninterrupted one. ``SanaPipeline`` keeps its latents in float32 under a
    bfloat16 transformer: before the family said so (``latent_dtype``), Tessera drew the noise in bfloat16 (0.034
    off, on latents up to 3.7) and a resume rounded the float32 latents to the model's dtype (0.032 off)."""
    from pipelines.loading import load_pipeline
    from runtime.jobs.image_session import RenderSession

    torch.set_num_threads(1)
    spec = RenderSpec.from_dict({**_spec(sana_dir).to_dict(), "dtype": "bfloat16"})
    pipe = load_pipeline(sana_dir, "bfloat16")
    whole = RenderSession(pipe, spec)
    while not whole.loop.done:
        whole.step()
    latents = whole.latents()
    assert latents.dtype == torch.float32
    expected = diffusers_output(
        sana_dir, spec, "bfloat16", output_type="latent", use_resolution_binning=False
    ).images
    assert torch.equal(latents, expected.cpu())
    first = RenderSession(pipe, spec)
    first.step()
    first.step()
    resumed = RenderSession(pipe, spec, resume=first.snapshot())
    while not resumed.loop.done:
        resumed.step()
    assert torch.equal(resumed.latents(), latents)
