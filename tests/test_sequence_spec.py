"""The sequence strategy's spec checks: a family must declare it, and each bad field is named before any
worker starts. No image family in main has a context-parallel plan yet, so the checks that need one run on
a stand-in: the tiny PixArt directory served by a family that declares "sequence" (spec checks only)."""

from __future__ import annotations

import pytest
from _tiny_pixart import save_tiny_pixart

import pipelines.families as families
from cluster.config import compose_job, spec_from_config
from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families.base import SequenceShape
from pipelines.families.pixart import PixArtFamily


class PixArtWithSequence(PixArtFamily):
    """A stand-in family with "sequence" and the token counts of PixArt's patch grid, read from its configs."""

    strategies = ("none", "patch", "sequence")

    def sequence_shape(self, path, height, width, prompt_tokens=None):
        transformer = self.component_config(path, "transformer")
        factor = 2 ** (len(self.component_config(path, "vae")["block_out_channels"]) - 1)
        patch = factor * transformer["patch_size"]
        return SequenceShape((height // patch) * (width // patch), 0, transformer["num_attention_heads"])


class SequenceWithoutShape(PixArtFamily):
    strategies = ("none", "sequence")


@pytest.fixture(scope="module")
def pixart_dir(tmp_path_factory):
    return save_tiny_pixart(tmp_path_factory.mktemp("models") / "pixart")


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(families._BY_PIPELINE, "PixArtAlphaPipeline", PixArtWithSequence())


def _spec(model, height=64, width=48, guidance_scale=4.5, **parallel) -> RenderSpec:
    fields = {"model": str(model), "height": height, "width": width, "steps": 2, "guidance_scale": guidance_scale}
    return RenderSpec.from_dict({**fields, "parallel": {"strategy": "sequence", "degree": 2, **parallel}})


def test_a_family_without_sequence_is_refused_naming_the_strategy_and_the_family():
    with pytest.raises(SpecError) as caught:
        _spec("builtin-image")
    assert caught.value.field == "parallel.strategy"
    assert "sd family" in str(caught.value) and "'sequence'" in str(caught.value)


# the tiny PixArt: 2 heads, 2x2 patches of an 8x latent, so 64 x 48 px is 4 x 3 = 12 tokens
BAD = [
    ({"degree": 1}, {}, "parallel.degree"),
    ({"degree": "auto"}, {}, "parallel.degree"),
    ({"degree": 3, "ring": 2}, {}, "parallel.ring"),  # 2 does not divide 3 workers
    ({"ring": 0}, {}, "parallel.ring"),
    ({"ring": "2"}, {}, "parallel.ring"),
    ({"degree": 2, "cfg": True}, {}, "parallel.degree"),  # one worker per branch
    ({"degree": 5, "cfg": True}, {}, "parallel.degree"),  # odd
    ({"degree": 4, "cfg": True}, {"guidance_scale": 1.0}, "parallel.cfg"),
    ({"degree": 4}, {}, "parallel.degree"),  # Ulysses over 4 workers, 2 heads
    ({"degree": 2}, {"height": 48, "width": 48}, "height"),  # 9 tokens
    ({"degree": 8, "ring": 4}, {"height": 48, "width": 64}, "height"),  # 12 tokens over 8 workers
]


@pytest.mark.parametrize("parallel,change,field", BAD)
def test_bad_sequence_fields_are_named(stand_in, pixart_dir, parallel, change, field):
    with pytest.raises(SpecError) as caught:
        _spec(pixart_dir, **change, **parallel)
    assert caught.value.field == field, str(caught.value)


@pytest.mark.parametrize(
    "parallel", [{"degree": 2}, {"degree": 4, "ring": 2}, {"degree": 4, "ring": 4}, {"degree": 4, "cfg": True}]
)
def test_sequence_specs_that_fit_are_valid(stand_in, pixart_dir, parallel):
    spec = _spec(pixart_dir, **parallel)
    assert spec.parallel.strategy == "sequence" and spec.parallel.ring == parallel.get("ring", 1)


def test_a_family_listing_sequence_must_say_its_tokens(monkeypatch, pixart_dir):
    monkeypatch.setitem(families._BY_PIPELINE, "PixArtAlphaPipeline", SequenceWithoutShape())
    with pytest.raises(SpecError) as caught:
        _spec(pixart_dir)
    assert caught.value.field == "parallel.strategy" and "sequence_shape" in str(caught.value)


def test_the_cli_group_file_builds_a_sequence_spec(stand_in, pixart_dir):
    model = ["model=local", f"model.name={pixart_dir}", "height=64", "width=48", "steps=2"]
    spec = spec_from_config(compose_job(["parallel=sequence", *model]))
    assert (spec.parallel.strategy, spec.parallel.degree, spec.parallel.ring, spec.parallel.cfg) == (
        "sequence",
        2,
        1,
        False,
    )
    with pytest.raises(SpecError) as caught:
        spec_from_config(compose_job(["parallel=sequence", "parallel.degree=3", "parallel.ring=2", *model]))
    assert caught.value.field == "parallel.ring"


def test_the_cli_refuses_sequence_on_the_builtin_model():
    with pytest.raises(SpecError) as caught:
        spec_from_config(compose_job(["parallel=sequence", "height=64", "width=64"]))
    assert caught.value.field == "parallel.strategy" and "sd family" in str(caught.value)
