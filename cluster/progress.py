"""How far a stored job can go, read from its plain spec without building it (no torch import)."""

from __future__ import annotations

from typing import Any


def progress_total(data: dict[str, Any]) -> int:
    """The unit count a job's steps_done goes up to: denoising steps, or a video's queue ticks."""
    if data.get("job") == "video":
        return data["frames"] // data["block_frames"] + data["steps"] - 1
    return data["steps"]
