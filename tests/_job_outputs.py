"""What a finished image job wrote, read back for assertions: its metadata.json and its PNG."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image


def job_metadata(record: dict) -> dict:
    with open(record["outputs"]["metadata"]) as file:
        return json.load(file)


def job_image(record: dict) -> np.ndarray:
    """The PNG as int RGB (so differences between two images do not wrap around)."""
    with Image.open(record["outputs"]["image"]) as png:
        return np.asarray(png.convert("RGB")).astype(int)
