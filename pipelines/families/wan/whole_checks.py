"""What the Wan family's whole-video strategies need of a render, checked at submit from JSON only.

``sequence``: diffusers' context parallelism over ``WanTransformer3DModel._cp_plan`` splits the video tokens
(latent frames x patch rows x patch columns; the prompt is not split) between all the workers and Ulysses
shares out the attention heads between its share of them (degree / ring), so each must divide evenly. Wan's
forward takes no attention mask, so Ring runs it (on CPU too, through ``parallel.sequence.cpu``'s flash
kernel). ``patch``'s check, a band of whole patch rows per worker, is every family's (``ModelFamily.band_error``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def whole_video_shape(family: Any, path: str | Path, spec: Any) -> dict[str, int]:
    """The whole video's latent frames, video tokens per frame and the model's heads."""
    transformer = family.component_config(path, "transformer")
    _, p_h, p_w = transformer.get("patch_size", [1, 2, 2])
    scale = family.latent_factor(path)
    rows, cols = spec.height // scale, spec.width // scale
    return {
        "latent_frames": spec.frames // family.temporal_factor(path),
        "tokens_per_frame": (rows // p_h) * (cols // p_w),
        "heads": int(transformer.get("num_attention_heads", 40)),
    }


def sequence_error(family: Any, path: str | Path, spec: Any, degree: int) -> tuple[str, str] | None:
    shape = whole_video_shape(family, path, spec)
    tokens = shape["latent_frames"] * shape["tokens_per_frame"]
    ulysses = degree // spec.parallel.ring
    if shape["heads"] % ulysses:
        return (
            "parallel.degree",
            f"Ulysses over {ulysses} workers (degree / ring) shares out the model's {shape['heads']} attention heads, "
            "which they do not divide; raise parallel.ring to move workers to Ring",
        )
    if tokens % degree:
        return (
            "frames",
            f"sequence parallelism splits the {tokens} video tokens between the workers; {degree} does not divide them",
        )
    return None

