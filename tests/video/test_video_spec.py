"""VideoSpec: bad video jobs are refused with the field named, before any worker starts."""

from __future__ import annotations

import pytest

from cluster.errors import SpecError
from cluster.jobs import progress_total, spec_data
from cluster.jobs.video import VideoSpec
from parallel.frames.schedule import ticks


def _spec(**fields):
    return VideoSpec.from_dict(dict(dict(frames=16, block_frames=4, height=32, width=32), **fields))


def test_defaults_are_valid_and_round_frames_with_a_note():
    spec = _spec(frames=18)
    assert spec.frames == 20 and spec.blocks == 5
    assert spec.notes == ["frames: 18 is not a multiple of block_frames=4; rendering 20 frames (5 blocks)"]
    assert _spec().notes == [] and VideoSpec.from_dict({}).frames == 64
    assert VideoSpec.from_dict({}).guidance_scale == 1.0  # guidance off unless asked for
    guided = _spec(guidance_scale=4, negative_prompt="blurry")
    assert (guided.guidance_scale, guided.negative_prompt) == (4, "blurry")


@pytest.mark.parametrize(
    "fields,field,words",
    [
        (dict(parallel={"degree": 5}), "parallel.degree", "exceed the 4 frame blocks"),
        (
            dict(frames=64, parallel={"degree": 7}),
            "parallel.degree",
            "exceed the model's 6 transformer blocks",
        ),
        (dict(parallel={"strategy": "bands"}), "parallel.strategy", "unknown strategy"),
        (dict(parallel={"strategy": "none", "degree": 2}), "parallel.degree", "exactly one worker"),
        (dict(parallel={"stages": 2}), "parallel.stages", "unknown field"),
        (dict(model="no-such-model"), "model", "neither a built-in model"),
        (dict(model="builtin-image"), "model", "must be a WanTransformer3DModel"),
        (dict(height=40), "height", "multiple of 16"),
        (dict(frames=0), "frames", "between 1 and"),
        (dict(context_frames=5), "context_frames", "block_frames=4"),
        (dict(steps=4, block_stride=5), "block_stride", "[1, steps=4]"),
        (dict(block_stride=0), "block_stride", "[1, steps="),
        (dict(fps=0), "fps", "(0, 240]"),
        (dict(frames=True), "frames", "expected int"),
        (dict(output_dir="../x"), "output_dir", ".."),
        (dict(heigth=32), "heigth", "unknown field"),
        (dict(guidance_scale=-1.0), "guidance_scale", "[0, 100]"),
        (dict(guidance_scale="high"), "guidance_scale", "expected int or float"),
        (dict(negative_prompt=None), "negative_prompt", "expected str"),
        (dict(frames=512, block_frames=300), "block_frames", "between 1 and 256"),
        (dict(frames=1028, parallel={"strategy": "sequence"}), "frames", "at most 1024 frames"),
    ],
)
def test_bad_fields_are_named(fields, field, words):
    with pytest.raises(SpecError) as err:
        _spec(**fields)
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize("strategy", ["sequence", "patch"])
def test_a_whole_video_past_the_block_bound_validates_again(strategy):
    """A whole-video spec's block is its video: validation sets block_frames=frames, and the controller validates
    that spec again (it once refused block_frames over 256 there, after the CLI had accepted the job)."""
    spec = _spec(frames=512, parallel={"strategy": strategy})
    assert (spec.block_frames, spec.blocks) == (512, 1)
    sent = spec_data(spec)  # what Client.submit sends the controller
    again = VideoSpec.from_dict({k: v for k, v in sent.items() if k != "job"})
    assert (again.frames, again.block_frames, again.context_frames) == (512, 512, 0)


def test_degree_larger_than_pool():
    with pytest.raises(SpecError, match="parallel.degree: degree 2 exceeds the pool's 1 workers"):
        _spec().check_fits(1)


def test_progress_counts_the_ticks_of_a_strided_queue():
    spec = {"job": "video", "frames": 32, "block_frames": 8, "steps": 10}
    assert progress_total(spec) == 13  # blocks + steps - 1: specs stored before block_stride
    assert progress_total({**spec, "block_stride": 3}) == 19 == ticks(4, 10, 3)
