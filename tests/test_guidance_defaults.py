"""A job that leaves its guidance weights unset takes its model's own: the defaults of the directory's pipeline
``__call__`` (each family's table, held here to diffusers' signature; filled in at submit and stored with the job), a
built-in model's own (5.0 for the image model, 1.0 for the video model); a weight given is kept as given."""

from __future__ import annotations

import inspect
import json

import pytest
from _tiny_flux import save_tiny_flux
from _tiny_qwenimage import save_tiny_qwenimage

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from cluster.jobs.video import VideoSpec
from pipelines.builtin import BUILTIN_MODELS
from pipelines.families import FAMILIES

# diffusers 0.42.1's __call__ defaults: (guidance_scale, true_cfg_scale); QwenImagePipeline's guidance_scale is None
# (read by guidance-distilled checkpoints only), taken as 1.0
PIPELINE_DEFAULTS = {
    "StableDiffusionPipeline": (7.5, 1.0),
    "StableDiffusionXLPipeline": (5.0, 1.0),
    "StableDiffusion3Pipeline": (7.0, 1.0),
    "FluxPipeline": (3.5, 1.0),
    "QwenImagePipeline": (1.0, 4.0),
    "SanaPipeline": (4.5, 1.0),
    "PixArtSigmaPipeline": (4.5, 1.0),
    "WanPipeline": (5.0, 1.0),
    "WanImageToVideoPipeline": (5.0, 1.0),
    "HunyuanVideoPipeline": (6.0, 1.0),
    "CogVideoXPipeline": (6.0, 1.0),
    "LTXPipeline": (3.0, 1.0),
    "TesseraVideoPipeline": (1.0, 1.0),  # not a diffusers class: no default of its own
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINE_DEFAULTS))
def test_a_family_takes_its_pipelines_call_defaults(tmp_path, pipeline):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    family = next(family for family in FAMILIES if pipeline in family.pipelines)
    guidance, true_cfg = PIPELINE_DEFAULTS[pipeline]
    assert family.guidance_defaults(tmp_path) == {"guidance_scale": guidance, "true_cfg_scale": true_cfg}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_every_family_table_is_the_signature_diffusers_has(family):
    """The families keep the defaults as data (validation imports no pipeline class); here, against diffusers."""
    import diffusers

    for pipeline in family.pipelines:
        cls = getattr(diffusers, pipeline, None)
        if cls is None:  # Tessera's own layout (the built-in video model's)
            assert pipeline not in family.call_guidance
            continue
        parameters = inspect.signature(cls.__call__).parameters
        expected = tuple(
            1.0 if name not in parameters or parameters[name].default is None else float(parameters[name].default)
            for name in ("guidance_scale", "true_cfg_scale")
        )
        assert family.call_guidance[pipeline] == expected, pipeline


def test_the_built_in_models_keep_their_own_defaults():
    image = RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2})
    video = VideoSpec.from_dict({"frames": 8, "parallel": {"strategy": "none", "degree": 1}})
    assert (image.guidance_scale, image.true_cfg_scale, video.guidance_scale) == (5.0, 1.0, 1.0)
    assert BUILTIN_MODELS["builtin-image"].guidance_scale == 5.0  # its directory names StableDiffusionPipeline (7.5)
    assert image.stored()["guidance_scale"] == 5.0  # the job is stored with the weight it renders with


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance")
    return {"flux": save_tiny_flux(root / "flux"), "qwen": save_tiny_qwenimage(root / "qwen")}


def _spec(model, **fields) -> RenderSpec:
    return RenderSpec.from_dict({"model": str(model), "height": 64, "width": 64, "steps": 2, **fields})


def test_flux_embeds_its_pipelines_guidance_and_runs_no_true_cfg(dirs):
    spec = _spec(dirs["flux"])
    assert (spec.guidance_scale, spec.true_cfg_scale, spec.guides()) == (3.5, 1.0, False)
    assert spec.stored()["guidance_scale"] == 3.5 and spec.stored()["true_cfg_scale"] == 1.0
    given = _spec(dirs["flux"], guidance_scale=2.0, true_cfg_scale=1.5, negative_prompt="blurry")
    assert (given.guidance_scale, given.true_cfg_scale, given.guides()) == (2.0, 1.5, True)
    again = RenderSpec.from_dict(spec.stored())  # read back from the store: the stored numbers, unchanged
    assert (again.guidance_scale, again.true_cfg_scale) == (3.5, 1.0)


def test_qwen_image_runs_its_pipelines_true_cfg_with_a_negative_prompt(dirs):
    plain = _spec(dirs["qwen"])
    assert (plain.true_cfg_scale, plain.guides()) == (4.0, False)  # no negative prompt: one branch, as diffusers
    guided = _spec(dirs["qwen"], negative_prompt="blurry", parallel={"strategy": "patch", "degree": 2, "cfg": True})
    assert (guided.true_cfg_scale, guided.guides()) == (4.0, True)
    with pytest.raises(SpecError) as err:  # a weight of 1 given: no branch to split off
        _spec(dirs["qwen"], negative_prompt="blurry", true_cfg_scale=1.0,
              parallel={"strategy": "patch", "degree": 2, "cfg": True})
    assert err.value.field == "parallel.cfg"


def test_a_bad_weight_is_still_refused_naming_it():
    for fields, name in (({"guidance_scale": "5"}, "guidance_scale"), ({"guidance_scale": -1}, "guidance_scale"),
                         ({"true_cfg_scale": 101}, "true_cfg_scale")):
        with pytest.raises(SpecError) as err:
            RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2, **fields})
        assert err.value.field == name


def test_cfg_parallel_of_a_video_follows_the_models_default():
    with pytest.raises(SpecError) as err:  # the built-in video model's default, 1.0: no unconditional branch
        VideoSpec.from_dict({"frames": 16, "parallel": {"strategy": "frames", "degree": 2, "cfg": True}})
    assert err.value.field == "parallel.cfg" and "guidance_scale=1.0" in str(err.value)
