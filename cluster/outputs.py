"""Write a job's outputs atomically: everything goes to a hidden partial folder, renamed when complete.

A crash or a bad input never leaves a half-written outputs/<job-id>/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def job_directory(output_root: str | Path, job_id: str) -> Path:
    """outputs/<job-id>, refusing ids that could step outside the output root."""
    if not JOB_ID.match(job_id):
        raise ValueError(f"job_id: {job_id!r} may hold only letters, digits, '_' and '-'")
    root = Path(output_root).resolve()
    target = (root / job_id).resolve()
    if target.parent != root:
        raise ValueError(f"job_id: {job_id!r} escapes the output root {root}")
    return target


def partial_directory(output_root: str | Path, job_id: str) -> Path:
    """The hidden folder a job's outputs grow in, renamed to outputs/<job-id>/ when complete."""
    target = job_directory(output_root, job_id)
    return target.parent / f".{job_id}.partial"


def job_outputs(directory: Path, kind: str, output_file: str) -> dict:
    """A finished job's outputs as its record holds them."""
    return {"directory": str(directory), kind: str(directory / output_file), "metadata": str(directory / "metadata.json")}


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def write_image_job(output_root: str | Path, job_id: str, image: np.ndarray, metadata: dict) -> Path:
    """Write image.png and metadata.json into outputs/<job-id>/ in one rename."""
    target = job_directory(output_root, job_id)
    if target.exists():
        raise FileExistsError(f"output directory {target} already exists")
    partial = partial_directory(output_root, job_id)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        Image.fromarray(to_uint8(image)).save(partial / "image.png")
        metadata = dict(metadata, outputs={"image": str(target / "image.png")})
        (partial / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
