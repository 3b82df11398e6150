"""A segment's model takes over the job's latent and sampler state mid-job, so validation refuses one that reads
them otherwise than the job model: another VAE scaling, another noise schedule or prediction (flow matching after
epsilon), another scheduler config, or a family the job's sampler does not fit. Tiny saved PixArt (DDIM, epsilon)
and SD3 (flow matching) pipelines share a latent space (4 channels, 4 VAE blocks), which was all that was checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _tiny_pixart import save_tiny_pixart
from _tiny_sd3 import save_tiny_sd3

from cluster.errors import SpecError
from cluster.jobs import parse_job


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segment-models")
    return {"pixart": save_tiny_pixart(root / "pixart"), "sd3": save_tiny_sd3(root / "sd3")}


def _job(first: Path, second: Path, **extra):
    return parse_job(
        {
            "model": str(first),
            "height": 32,
            "width": 32,
            "steps": 4,
            "segments": [{"steps": 2}, {"steps": 2, "model": str(second)}],
            **extra,
        }
    )


def _copy(model: Path, to: Path, component: str, file: str, **changes) -> Path:
    """A copy of the saved pipeline ``model`` with fields of one component's JSON config changed."""
    shutil.copytree(model, to)
    config = to / component / file
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return to


def test_an_epsilon_and_a_flow_matching_model_do_not_share_a_job(models):
    for first, second in (("pixart", "sd3"), ("sd3", "pixart")):
        with pytest.raises(SpecError) as caught:
            _job(models[first], models[second])
        assert caught.value.field == "segments[1].model"
        for named in ("prediction_type", "scaling_factor", "FlowMatchEulerDiscreteScheduler"):
            assert named in str(caught.value)
    with pytest.raises(SpecError) as caught:  # ddim fits PixArt, and is the same class on both: still refused
        _job(models["pixart"], models["sd3"], sampler="ddim")
    assert caught.value.field == "segments[1].model"
    assert "'flow_prediction'" in str(caught.value)


def test_a_segment_model_needs_the_job_models_vae_scaling(models, tmp_path):
    scaled = _copy(models["pixart"], tmp_path / "pixart-scaled", "vae", "config.json", scaling_factor=0.13025)
    with pytest.raises(SpecError) as caught:
        _job(models["pixart"], scaled)
    assert caught.value.field == "segments[1].model"
    assert "scaling_factor 0.13025" in str(caught.value)


def test_a_segment_model_needs_the_job_models_schedule(models, tmp_path):
    same = _copy(models["sd3"], tmp_path / "sd3-same", "scheduler", "scheduler_config.json")
    assert _job(models["sd3"], same).segment_models() == [str(models["sd3"]), str(same)]
    shifted = _copy(models["sd3"], tmp_path / "sd3-shift", "scheduler", "scheduler_config.json", shift=1.0)
    with pytest.raises(SpecError) as caught:  # the segment would step its own timesteps over the job's sigmas
        _job(models["sd3"], shifted)
    assert caught.value.field == "segments[1].model"
    assert "shift 1.0" in str(caught.value)
    betas = _copy(models["pixart"], tmp_path / "pixart-betas", "scheduler", "scheduler_config.json", beta_end=0.012)
    with pytest.raises(SpecError) as caught:
        _job(models["pixart"], betas, sampler="euler")
    assert caught.value.field == "segments[1].model"
    assert "beta_end 0.012" in str(caught.value)


def test_the_jobs_sampler_must_fit_every_segment_models_family(models, tmp_path):
    """A PixArt pipeline given SD3's VAE scaling and flow-matching scheduler shares everything a switch carries with
    SD3, but flow-euler is not one of the pixart family's samplers."""
    flow = _copy(models["pixart"], tmp_path / "pixart-flow", "vae", "config.json", scaling_factor=1.5305, shift_factor=0.0609)
    shutil.copy(models["sd3"] / "scheduler" / "scheduler_config.json", flow / "scheduler" / "scheduler_config.json")
    assert _job(models["sd3"], models["sd3"], sampler="flow-euler").sampler == "flow-euler"
    with pytest.raises(SpecError) as caught:
        _job(models["sd3"], flow, sampler="flow-euler")
    assert caught.value.field == "sampler"
    assert "segments[1].model" in str(caught.value)
