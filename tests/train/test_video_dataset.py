"""The procedural video dataset: deterministic by seed, captioned like the image dataset, and moving."""

from __future__ import annotations

import pytest
import torch

from pipelines.datasets import COLOUR_NAMES
from pipelines.video_dataset import VIDEO_PATTERNS, VideoShapesConfig, VideoShapesDataset


def test_same_seed_same_clips_different_seed_different_clips():
    a = VideoShapesDataset(VideoShapesConfig(size=16, frames=3, seed=3))
    b = VideoShapesDataset(VideoShapesConfig(size=16, frames=3, seed=3))
    c = VideoShapesDataset(VideoShapesConfig(size=16, frames=3, seed=4))
    for i in (0, 5, 999):
        (clip_a, caption_a), (clip_b, caption_b) = a[i], b[i]
        assert caption_a == caption_b and torch.equal(clip_a, clip_b)
    differing = sum(a[i][1] != c[i][1] or not torch.equal(a[i][0], c[i][0]) for i in range(8))
    assert differing >= 6


def test_clips_in_range_captioned_with_two_colours_and_every_pattern():
    data = VideoShapesDataset(VideoShapesConfig(size=16, frames=4))
    kinds = set()
    for i in range(40):
        clip, caption = data[i]
        assert clip.shape == (4, 3, 16, 16) and clip.dtype == torch.float32
        assert clip.min() >= -1 and clip.max() <= 1
        assert sum(name in caption.split() for name in COLOUR_NAMES) == 2, caption
        kinds.add(data.describe(i)[0])
    assert kinds == set(VIDEO_PATTERNS)


def test_every_clip_moves_and_a_later_window_continues_the_clip():
    data = VideoShapesDataset(VideoShapesConfig(size=32, frames=8))
    for i in range(12):
        clip, _ = data[i]
        steps = (clip[1:] - clip[:-1]).abs().mean(dim=(1, 2, 3))
        assert (steps > 1e-3).all(), (data.describe(i)[0], steps)  # something moves between every frame pair
        later, _ = data.draw(i, frames=3, start=5)
        torch.testing.assert_close(later, clip[5:8])


def test_shapes_bounce_and_stay_in_view():
    data = VideoShapesDataset(VideoShapesConfig(size=32, frames=60, patterns=("circle",)))
    clip, caption = data[0]
    assert "circle" in caption
    _, params, fg, _ = data.describe(0)
    assert params["velocity"].any()
    background = clip[:, :, 0, 0]  # a corner pixel: the circle never fills the corners entirely
    # the foreground colour covers a similar area in every frame: the circle never leaves the image
    area = (clip - background[:, :, None, None]).abs().sum(dim=1).gt(0.5).float().mean(dim=(1, 2))
    assert area.min() > 0.6 * area.max()


def test_unknown_pattern_is_refused_by_name():
    with pytest.raises(ValueError, match="patterns"):
        VideoShapesDataset(VideoShapesConfig(patterns=("spiral",)))
