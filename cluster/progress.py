"""How far a stored job can go, read from its plain spec without building it (no torch import: the
schedule module is plain Python)."""

from __future__ import annotations

from typing import Any

from parallel.frames.schedule import ticks


def progress_total(data: dict[str, Any]) -> int:
    """The unit count a job's steps_done goes up to: denoising steps, or a video's queue ticks."""
    if data.get("job") == "video":
        return ticks(data["frames"] // data["block_frames"], data["steps"], data.get("block_stride", 1))
    return data["steps"]
