"""Procedural captioned videos: circles and squares that move and bounce, stripes and checkerboards that scroll.

The video counterpart of pipelines/datasets.py, drawn with its helpers and named colours, with the same
captions ("a red circle on a blue background", "blue and yellow vertical stripes"), so the text encoder the
video model shares with the image model already knows the words. Clip i is fixed by (dataset seed, i):
pattern, colours, geometry and motion come from one seeded generator, and frame t is drawn at time t from
those parameters, so any frame of any clip can be drawn alone, at any resolution, on any worker.

Motion is what the video model has to learn: a shape moves at a constant velocity and bounces off the
image borders (so it stays in view however long the video), stripes and checkerboards scroll at a constant
speed. Speeds are in image widths per frame, large enough that a shape crosses a quarter of the image in
an 8-frame block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.datasets import COLOUR_NAMES, COLOURS, Grid, _edge, _grid, _half_period_distance, caption_for

VIDEO_PATTERNS = ("circle", "square", "stripes", "checkerboard")


def _bounce(start: float, velocity: float, t: float, low: float, high: float) -> float:
    """Position at time t of a point moving at `velocity` from `start`, reflected at `low` and `high`."""
    span = high - low
    if span <= 0:
        return low
    x = (start - low + velocity * t) % (2 * span)
    return low + (x if x <= span else 2 * span - x)


def _moving_shape(pattern: str, rng: np.random.Generator) -> dict:
    size = rng.uniform(0.16, 0.28) if pattern == "circle" else rng.uniform(0.13, 0.24)
    start = rng.uniform(size, 1 - size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.035, 0.07)
    return {"size": size, "start": start, "velocity": speed * np.array([np.sin(angle), np.cos(angle)])}


def _scrolling(pattern: str, rng: np.random.Generator) -> dict:
    # Coarser than the image dataset's: at 64 px a latent pixel is 8 px, and a band must span a few of them.
    count = int(rng.integers(2, 4)) if pattern == "stripes" else int(rng.integers(1, 3))
    sign = 1.0 if rng.integers(2) else -1.0
    return {
        "vertical": bool(rng.integers(2)),
        "count": count,
        "phase": rng.uniform(0, 1),
        "speed": sign * rng.uniform(0.04, 0.08) * count,  # periods per frame: 0.04-0.08 widths
    }


def _mask(pattern: str, params: dict, t: float, grid: Grid, pixel: float) -> tuple[np.ndarray, str]:
    """Foreground coverage of frame t in [0, 1] and the pattern's caption word(s)."""
    if pattern in ("circle", "square"):
        size = params["size"]
        cy = _bounce(params["start"][0], params["velocity"][0], t, size, 1 - size)
        cx = _bounce(params["start"][1], params["velocity"][1], t, size, 1 - size)
        if pattern == "circle":
            distance = np.hypot(grid[0] - cy, grid[1] - cx) - size
        else:
            distance = np.maximum(np.abs(grid[0] - cy), np.abs(grid[1] - cx)) - size
        return _edge(distance, pixel), pattern
    count, shift = params["count"], params["phase"] + params["speed"] * t
    if pattern == "stripes":
        coord = grid[1] if params["vertical"] else grid[0]
        kind = "vertical stripes" if params["vertical"] else "horizontal stripes"
        return _edge(_half_period_distance(coord * count + shift), pixel * count), kind
    my = _edge(_half_period_distance(grid[0] * count + shift), pixel * count)
    mx = _edge(_half_period_distance(grid[1] * count + (shift if params["vertical"] else 0.0)), pixel * count)
    return my * mx + (1 - my) * (1 - mx), "checkerboard"


@dataclass(frozen=True)
class VideoShapesConfig:
    """Which procedural clips a `VideoShapesDataset` draws."""

    size: int = 64
    """Height and width in pixels."""
    frames: int = 10
    """Frames per clip."""
    length: int = 100_000
    """Number of distinct clips (indices wrap modulo this)."""
    seed: int = 0
    """Dataset seed: with the index it fixes a clip's pattern, colours, geometry and motion."""
    patterns: tuple[str, ...] = VIDEO_PATTERNS
    """Pattern kinds to draw from."""


class VideoShapesDataset(torch.utils.data.Dataset):
    """Item i: (clip [frames, 3, size, size] in [-1, 1], caption), deterministic by (seed, i)."""

    def __init__(self, config: VideoShapesConfig = VideoShapesConfig()) -> None:
        unknown = set(config.patterns) - set(VIDEO_PATTERNS)
        if unknown:
            raise ValueError(f"patterns: unknown {sorted(unknown)}; expected some of {list(VIDEO_PATTERNS)}")
        if config.frames < 1:
            raise ValueError(f"frames: must be at least 1, got {config.frames}")
        self.config = config

    def __len__(self) -> int:
        return self.config.length

    def describe(self, index: int) -> tuple[str, dict, str, str]:
        """(pattern, motion parameters, foreground colour, background colour) of clip `index`."""
        rng = np.random.default_rng([self.config.seed, index % self.config.length, 7])
        pattern = self.config.patterns[int(rng.integers(len(self.config.patterns)))]
        fg, bg = rng.choice(len(COLOUR_NAMES), size=2, replace=False)
        params = _moving_shape(pattern, rng) if pattern in ("circle", "square") else _scrolling(pattern, rng)
        return pattern, params, COLOUR_NAMES[fg], COLOUR_NAMES[bg]

    def draw(
        self, index: int, size: int | None = None, frames: int | None = None, start: int = 0
    ) -> tuple[torch.Tensor, str]:
        """Clip `index`, frames `start .. start + frames - 1`, at `size` pixels: [frames, 3, size, size]."""
        pattern, params, fg, bg = self.describe(index)
        side = size or self.config.size
        count = frames or self.config.frames
        grid, pixel = _grid(side, side), 1.0 / side
        fg_rgb = np.asarray(COLOURS[fg])[:, None, None]
        bg_rgb = np.asarray(COLOURS[bg])[:, None, None]
        images, kind = [], pattern
        for t in range(start, start + count):
            mask, kind = _mask(pattern, params, float(t), grid, pixel)
            images.append(mask[None] * fg_rgb + (1 - mask[None]) * bg_rgb)
        clip = torch.from_numpy(np.stack(images).astype(np.float32)) * 2 - 1
        return clip, caption_for(pattern, kind, fg, bg)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.draw(index)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, list[str]]:
        """Clips stacked to [n, frames, 3, size, size] and their captions."""
        items = [self.draw(i) for i in indices]
        return torch.stack([clip for clip, _ in items]), [caption for _, caption in items]
