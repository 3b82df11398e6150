"""The conditioning image of an image-to-video render (a video spec's ``image``): a local file Pillow reads.

Checked at submit (``cluster.jobs.video``) and opened again by the family's pipeline in the worker; family-neutral,
so the spec's check imports no family.
"""

from __future__ import annotations

from pathlib import Path


def open_image(path: str | Path):
    """The conditioning image as RGB; ValueError naming ``image`` when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # a name too long for the file system, a path through a file
        raise ValueError(f"image: cannot be read: {err.strerror or err}") from None
    if is_dir:
        raise ValueError(f"image: {str(path)!r} is a directory, not an image file")
    if not is_file:
        raise ValueError(f"image: no such file {str(path)!r}")
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"image: {str(path)!r} is not an image Pillow can read ({err})") from err
