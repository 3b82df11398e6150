"""Procedural captioned images: stripes, checkerboards, circles, squares, gradients and blobs in named colours.

No downloads: every image is drawn from its parameters, and the parameters come from a generator seeded by
(dataset seed, index), so item i is the same on every worker and in every run. Shapes are defined in
coordinates relative to the image size, so any resolution draws the same picture (edges are anti-aliased
over about one pixel), which is what lets a model trained at 128 px render the same structure at 512 px.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.1, 0.1),
    "green": (0.1, 0.7, 0.2),
    "blue": (0.12, 0.25, 0.9),
    "yellow": (0.98, 0.88, 0.1),
    "white": (0.97, 0.97, 0.97),
    "black": (0.04, 0.04, 0.04),
    "orange": (0.98, 0.55, 0.05),
    "purple": (0.55, 0.15, 0.7),
    "cyan": (0.1, 0.85, 0.9),
    "pink": (0.98, 0.6, 0.75),
}
COLOUR_NAMES = tuple(COLOURS)

Grid = tuple[np.ndarray, np.ndarray]
"""Pixel-centre coordinates (y, x) in [0, 1), each [height, width]."""


def _grid(height: int, width: int) -> Grid:
    y = (np.arange(height, dtype=np.float64) + 0.5) / height
    x = (np.arange(width, dtype=np.float64) + 0.5) / width
    return np.meshgrid(y, x, indexing="ij")


def _edge(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
    """Coverage in [0, 1] of the region where the signed distance is negative, soft over one pixel."""
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def _half_period_distance(periods: np.ndarray) -> np.ndarray:
    """Signed distance (in periods) to the first half of each period, wrapping around period ends."""
    phase = periods % 1.0
    return np.minimum(np.abs(phase - 0.25), np.abs(phase - 1.25)) - 0.25


def _stripes(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    vertical = bool(rng.integers(2))
    count = int(rng.integers(3, 7))
    coord = grid[1] if vertical else grid[0]
    mask = _edge(_half_period_distance(coord * count), pixel * count)
    return mask, "vertical stripes" if vertical else "horizontal stripes"


def _checkerboard(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    cells = int(rng.integers(2, 6))
    my = _edge(_half_period_distance(grid[0] * cells), pixel * cells)
    mx = _edge(_half_period_distance(grid[1] * cells), pixel * cells)
    return my * mx + (1 - my) * (1 - mx), "checkerboard"


def _circle(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    radius = rng.uniform(0.18, 0.36)
    cy, cx = rng.uniform(radius, 1 - radius, size=2)
    distance = np.hypot(grid[0] - cy, grid[1] - cx) - radius
    return _edge(distance, pixel), "circle"


def _square(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    half = rng.uniform(0.15, 0.32)
    cy, cx = rng.uniform(half, 1 - half, size=2)
    distance = np.maximum(np.abs(grid[0] - cy), np.abs(grid[1] - cx)) - half
    return _edge(distance, pixel), "square"


def _gradient(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    vertical = bool(rng.integers(2))
    return 1.0 - (grid[0] if vertical else grid[1]), "gradient"


def _blobs(rng: np.random.Generator, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    field = np.zeros_like(grid[0])
    for _ in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(0.1, 0.9, size=2)
        sigma = rng.uniform(0.06, 0.12)
        field += np.exp(-((grid[0] - cy) ** 2 + (grid[1] - cx) ** 2) / (2 * sigma**2))
    return _edge(0.5 - field, pixel * 4), "blobs"


PATTERNS: dict[str, Callable[[np.random.Generator, Grid, float], tuple[np.ndarray, str]]] = {
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "circle": _circle,
    "square": _square,
    "gradient": _gradient,
    "blobs": _blobs,
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_for(pattern: str, kind: str, fg: str, bg: str) -> str:
    """The caption of one drawn image, e.g. "a red circle on a blue background"."""
    if pattern in ("circle", "square"):
        return f"{_article(fg)} {fg} {kind} on a {bg} background"
    if pattern == "blobs":
        return f"{fg} blobs on a {bg} background"
    if pattern == "gradient":
        return f"{_article(fg)} {fg} to {bg} gradient"
    if pattern == "checkerboard":
        return f"{_article(fg)} {fg} and {bg} checkerboard"
    return f"{fg} and {bg} {kind}"


def draw(pattern: str, params_seed: int, fg: str, bg: str, height: int, width: int) -> tuple[np.ndarray, str]:
    """One image as float32 [3, height, width] in [0, 1] and its caption."""
    rng = np.random.default_rng(params_seed)
    pixel = 1.0 / min(height, width)
    mask, kind = PATTERNS[pattern](rng, _grid(height, width), pixel)
    fg_rgb = np.asarray(COLOURS[fg])[:, None, None]
    bg_rgb = np.asarray(COLOURS[bg])[:, None, None]
    image = mask[None] * fg_rgb + (1 - mask[None]) * bg_rgb
    return image.astype(np.float32), caption_for(pattern, kind, fg, bg)


@dataclass(frozen=True)
class ShapesConfig:
    """Which procedural images a `ShapesDataset` draws."""

    size: int = 128
    """Height and width in pixels."""
    length: int = 100_000
    """Number of distinct items (indices wrap modulo this)."""
    seed: int = 0
    """Dataset seed: with the index it fixes the pattern, colours and geometry of an item."""
    patterns: tuple[str, ...] = tuple(PATTERNS)
    """Pattern kinds to draw from."""


class ShapesDataset(torch.utils.data.Dataset):
    """Item i: (image [3, size, size] in [-1, 1], caption), deterministic by (seed, i)."""

    def __init__(self, config: ShapesConfig = ShapesConfig()) -> None:
        unknown = set(config.patterns) - set(PATTERNS)
        if unknown:
            raise ValueError(f"patterns: unknown {sorted(unknown)}; expected some of {sorted(PATTERNS)}")
        self.config = config

    def __len__(self) -> int:
        return self.config.length

    def describe(self, index: int) -> tuple[str, int, str, str]:
        """(pattern, geometry seed, foreground colour, background colour) of item `index`."""
        rng = np.random.default_rng([self.config.seed, index % self.config.length])
        pattern = self.config.patterns[int(rng.integers(len(self.config.patterns)))]
        fg, bg = rng.choice(len(COLOUR_NAMES), size=2, replace=False)
        return pattern, int(rng.integers(2**31)), COLOUR_NAMES[fg], COLOUR_NAMES[bg]

    def draw(self, index: int, size: int | None = None) -> tuple[torch.Tensor, str]:
        """Item `index` drawn at `size` pixels (default: the configured size)."""
        pattern, geometry, fg, bg = self.describe(index)
        side = size or self.config.size
        image, caption = draw(pattern, geometry, fg, bg, side, side)
        return torch.from_numpy(image) * 2 - 1, caption

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.draw(index)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, list[str]]:
        """Images stacked to [n, 3, size, size] and their captions."""
        items = [self.draw(i) for i in indices]
        return torch.stack([image for image, _ in items]), [caption for _, caption in items]
