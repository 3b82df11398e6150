"""How far a stored job can go, read from its plain spec without building it (no torch import)."""

from __future__ import annotations

from typing import Any


def progress_total(data: dict[str, Any]) -> int:
    """The unit count a job's steps_done goes up to: denoising steps, or a video's queue ticks."""
    if data.get("job") == "video":
        return (data["frames"] // data["block_frames"] - 1) * data.get("block_stride", 1) + data["steps"]
    return data["steps"]
