"""Outputs are written atomically and stay inside the output root."""

import json

import numpy as np
import pytest
from PIL import Image

from cluster.outputs import job_directory, write_image_job


def test_writes_png_and_metadata(tmp_path):
    image = np.linspace(0, 1, 8 * 4 * 3).reshape(8, 4, 3)
    target = write_image_job(tmp_path, "job-1", image, {"seed": 3})
    assert sorted(p.name for p in target.iterdir()) == ["image.png", "metadata.json"]
    with Image.open(target / "image.png") as png:
        assert png.size == (4, 8) and png.mode == "RGB"
    assert json.loads((target / "metadata.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".*partial"))


def test_failed_write_leaves_nothing(tmp_path):
    circular: dict = {}
    circular["self"] = circular  # metadata that cannot be serialised, after the PNG is written
    with pytest.raises(ValueError, match="Circular"):
        write_image_job(tmp_path, "job-2", np.zeros((4, 4, 3)), circular)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_job_ids_cannot_escape_the_root(tmp_path, job_id):
    with pytest.raises(ValueError, match="job_id"):
        job_directory(tmp_path, job_id)
