"""Bad frame-pipeline input fails early with the field named, or is rounded with a warning saying to what."""

from __future__ import annotations

import pytest
from _parallel_dist import run_ranks
from _video_workers import too_many_stages

from parallel.frames.schedule import split_frames


def test_frames_rounded_up_to_whole_blocks_with_a_warning():
    with pytest.warns(
        UserWarning, match=r"frames: 70 is not a multiple of block_frames=8; rendering 72 frames"
    ):
        assert split_frames(70, 8) == (72, 9)
    assert split_frames(64, 8) == (64, 8)


@pytest.mark.parametrize("frames,block_frames,field", [(0, 8, "frames"), (8, 0, "block_frames")])
def test_frames_and_block_size_must_be_positive(frames, block_frames, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        split_frames(frames, block_frames)


def test_more_stages_than_blocks_or_layers_names_the_field():
    for errors in run_ranks(too_many_stages, 3, timeout=120):
        assert "parallel.degree: 3 stages exceed the 2 frame blocks" in errors["blocks"]
        assert "parallel.degree: 3 stages exceed the model's 2 transformer blocks" in errors["layers"]


def test_stage_cut_counts_stage_zero_decode_work():
    """Stage 0 also decodes every finished block: with that folded into layer 0, it gets fewer layers."""
    from parallel.frames.partition import stage_boundaries

    assert stage_boundaries([1.0] * 6, 2) == [0, 3, 6]
    assert stage_boundaries([1.0 + 4.0] + [1.0] * 5, 2) == [0, 1, 6]
    with pytest.raises(ValueError, match="parallel.degree: 7 stages exceed the model's 6 transformer blocks"):
        stage_boundaries([1.0] * 6, 7)
