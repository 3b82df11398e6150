"""The procedural dataset: deterministic by seed, resolution-independent, captioned."""

from __future__ import annotations

import torch

from pipelines.datasets import COLOUR_NAMES, PATTERNS, ShapesConfig, ShapesDataset


def test_same_seed_same_items_different_seed_different_items():
    a = ShapesDataset(ShapesConfig(size=32, seed=3))
    b = ShapesDataset(ShapesConfig(size=32, seed=3))
    c = ShapesDataset(ShapesConfig(size=32, seed=4))
    for i in (0, 1, 17, 999):
        image_a, caption_a = a[i]
        image_b, caption_b = b[i]
        assert caption_a == caption_b
        assert torch.equal(image_a, image_b)
    differing = sum(a[i][1] != c[i][1] or not torch.equal(a[i][0], c[i][0]) for i in range(8))
    assert differing >= 6


def test_items_are_images_in_range_with_named_colours_in_caption():
    data = ShapesDataset(ShapesConfig(size=24, seed=0))
    kinds = set()
    for i in range(60):
        image, caption = data[i]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert sum(name in caption.split() for name in COLOUR_NAMES) == 2, caption
        kinds.add(data.describe(i)[0])
    assert kinds == set(PATTERNS)


def test_drawing_at_four_times_the_size_gives_the_same_picture():
    data = ShapesDataset(ShapesConfig(size=32, seed=1))
    for i in range(12):
        small, caption = data.draw(i, 32)
        large, caption_large = data.draw(i, 128)
        assert caption == caption_large
        pooled = torch.nn.functional.avg_pool2d(large[None], 4)[0]
        assert (pooled - small).abs().mean() < 0.03, data.describe(i)


def test_images_have_structure_not_flat_colour():
    data = ShapesDataset(ShapesConfig(size=32, seed=2, patterns=("stripes", "checkerboard", "circle")))
    for i in range(10):
        image, _ = data[i]
        assert image.std(dim=(1, 2)).max() > 0.1
